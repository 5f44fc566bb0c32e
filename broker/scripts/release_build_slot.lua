-- release_build_slot: end the agent's lease on a build slot (idempotent).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  the slot's lease hash (lib/build_slots.lua)
-- ARGV[1]  agent name (any case)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required
-- ARGV[4]  branch
-- Returns {"ok", 1 if a live lease was released else 0, release time (ISO)}, or an error
-- table from resolve_agent.
-- @include lib/common.lua
-- @include lib/build_slots.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if err then return err end
local iso, now_us = now()
local holder = slot_holder(agent.name, ARGV[4])
local live = slot_live(KEYS[3], tonumber(now_us))
local released = 0
if live[holder] then
  redis.call("HDEL", KEYS[3], holder)
  live[holder] = nil
  released = 1
end
slot_expire(KEYS[3], live)
return {"ok", released, iso}
