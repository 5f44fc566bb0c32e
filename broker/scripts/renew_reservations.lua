-- renew_reservations: extend the agent's live reservations (all, or those with the given exact
-- patterns or ids): new expiry = max(now, old expiry) + extension, announced on the project's
-- doorbell channel.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  mode: "all", "paths" or "ids"
-- ARGV[6]  extension in microseconds
-- ARGV[7]  the project's doorbell shard channel (SPUBLISH)
-- ARGV[8]  the change event published there when one is renewed (broker/store/doorbell.py change_event)
-- ARGV[9..] patterns or ids for the mode
-- Returns {"ok", JSON list of {id, path_pattern, old_expires_ts, new_expires_ts}, 1 if a drain
-- must be enqueued else 0} or an error table from resolve_agent.
-- @include lib/common.lua
-- @include lib/reservations.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix = ARGV[1]
local _, now_us, ms = now()
local now_num = tonumber(now_us)
local items = {}
for k = 9, #ARGV do items[#items + 1] = ARGV[k] end
local renewed, changed = {}, {}
for _, id in ipairs(res_select(prefix, string.lower(agent.name), now_num, ARGV[5], items)) do
  local record_key = pkey(prefix, "res:" .. id)
  local r = redis.call("HMGET", record_key, "expires_us", "path_pattern")
  local old = tonumber(r[1])
  local base = old > now_num and old or now_num
  local expires_us = string.format("%.0f", base + tonumber(ARGV[6]))
  -- the index entry carries no expiry, so only the record and the expiry zset change
  redis.call("ZADD", pkey(prefix, "res:expiry"), expires_us, id)
  redis.call("HSET", record_key, "expires_us", expires_us)
  changed[#changed + 1] = "res:" .. id
  renewed[#renewed + 1] = {id = tonumber(id), path_pattern = r[2], old_expires_ts = iso_from_us(r[1]),
    new_expires_ts = iso_from_us(expires_us)}
end
if #renewed > 0 then redis.call("SPUBLISH", ARGV[7], ARGV[8]) end
return {"ok", cjson.encode(renewed), mark_pending_all(KEYS[3], ms, changed)}
