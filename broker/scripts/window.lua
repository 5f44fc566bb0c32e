-- window: a project's window identities (MCP_AGENT_MAIL_WINDOW_ID -> a stable agent name), kept
-- in one hash keyed by window uuid. A window lives until expires (last activity + TTL); expired
-- ones count as gone and are removed when met.
-- KEYS[1]  project hash
-- KEYS[2]  windows hash (window uuid -> JSON: id, window_uuid, display_name, created_ts,
--          last_active_ts, expires_ts, expires_us)
-- KEYS[3]  windows id counter
-- ARGV[1]  operation: "list", "rename", "expire", "touch" (refresh its activity) or "bind"
--          (create, or point an existing window at a new name)
-- ARGV[2]  window uuid (lower-case canonical form; not for "list")
-- ARGV[3]  TTL in microseconds
-- ARGV[4]  display name ("rename", "bind")
-- Returns {"ok", JSON array of live windows} for list; {"ok", window JSON, old display name}
-- for the others; {"NO_PROJECT"}; {"NOT_FOUND"} (rename, expire, touch).
-- @include lib/common.lua
if redis.call("EXISTS", KEYS[1]) == 0 then return {"NO_PROJECT"} end
local iso, now_us = now()
local now_num = tonumber(now_us)
local op, uuid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])

if op == "list" then
  local all, live = redis.call("HGETALL", KEYS[2]), {}
  for i = 1, #all, 2 do
    if tonumber(cjson.decode(all[i + 1]).expires_us) > now_num then
      live[#live + 1] = all[i + 1]
    else
      redis.call("HDEL", KEYS[2], all[i])
    end
  end
  return {"ok", "[" .. table.concat(live, ",") .. "]"}
end

local raw = redis.call("HGET", KEYS[2], uuid)
local window = raw and cjson.decode(raw)
if window and tonumber(window.expires_us) <= now_num then
  redis.call("HDEL", KEYS[2], uuid)
  window = nil
end
if not window then
  if op ~= "bind" then return {"NOT_FOUND"} end
  window = {id = redis.call("INCR", KEYS[3]), window_uuid = uuid, display_name = ARGV[4], created_ts = iso}
end
local old = window.display_name
if op == "expire" then
  window.expires_ts = iso
  window.expires_us = now_us
  redis.call("HDEL", KEYS[2], uuid)
  return {"ok", cjson.encode(window), old}
end
if op == "rename" or op == "bind" then window.display_name = ARGV[4] end
if op ~= "rename" then
  local expires = now_num + ttl
  window.last_active_ts = iso
  window.expires_us = string.format("%.0f", expires)
  window.expires_ts = iso_from_us(expires)
end
local encoded = cjson.encode(window)
redis.call("HSET", KEYS[2], uuid, encoded)
return {"ok", encoded, old}
