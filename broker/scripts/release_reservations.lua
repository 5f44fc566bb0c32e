-- release_reservations: end the agent's live reservations (all, or those with the given exact
-- patterns or ids). Idempotent: ended ones are not counted again. Also forgets up to twice as
-- many (+8) ended reservations past their retention (res_gc), so releases never outpace it. A
-- release is announced on the project's doorbell channel.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  mode: "all", "paths" or "ids"
-- ARGV[6]  seconds to keep a record after it ends
-- ARGV[7]  the project's doorbell shard channel (SPUBLISH)
-- ARGV[8]  the change event published there when one is released (broker/store/doorbell.py change_event)
-- ARGV[9..] patterns or ids for the mode
-- Returns {"ok", released count, released_at ISO, 1 if a drain must be enqueued else 0} or an error table from resolve_agent.
-- @include lib/common.lua
-- @include lib/reservations.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix = ARGV[1]
local iso, now_us, ms = now()
local items = {}
for k = 9, #ARGV do items[#items + 1] = ARGV[k] end
local chosen = res_select(prefix, string.lower(agent.name), tonumber(now_us), ARGV[5], items)
local changed = {}
for _, id in ipairs(chosen) do
  local record_key = pkey(prefix, "res:" .. id)
  redis.call("HSET", record_key, "released_us", now_us)
  res_retire(prefix, id, record_key, ARGV[6])
  changed[#changed + 1] = "res:" .. id
end
res_gc(prefix, now_us, 2 * #chosen + 8)
if #chosen > 0 then redis.call("SPUBLISH", ARGV[7], ARGV[8]) end
local schedule = mark_pending_all(KEYS[3], ms, changed)
return {"ok", #chosen, iso, schedule}
