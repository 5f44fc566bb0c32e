-- renew_build_slot: extend the agent's live lease on a build slot: new expiry = max(now, old
-- expiry) + extension. An expired or released lease is not revived (acquire it again).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  the slot's lease hash (lib/build_slots.lua)
-- ARGV[1]  agent name (any case)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required
-- ARGV[4]  branch
-- ARGV[5]  extension in microseconds
-- Returns {"ok", new expiry in microseconds, or "" when the agent holds no live lease}, or an
-- error table from resolve_agent.
-- @include lib/common.lua
-- @include lib/build_slots.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if err then return err end
local _, now_us = now()
local now_num = tonumber(now_us)
local holder = slot_holder(agent.name, ARGV[4])
local live = slot_live(KEYS[3], now_num)
local own = live[holder]
if own == nil then
  slot_expire(KEYS[3], live)
  return {"ok", ""}
end
own.expires_us = string.format("%.0f", math.max(now_num, tonumber(own.expires_us)) + tonumber(ARGV[5]))
redis.call("HSET", KEYS[3], holder, cjson.encode(own))
slot_expire(KEYS[3], live)
return {"ok", own.expires_us}
