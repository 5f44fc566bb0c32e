-- fetch_topic: messages with one topic that the viewer sent or received, newest first.
-- Scans at most ARGV[9] topic entries per call (bounded work); returns ready-made JSON.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  viewer name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  lower(topic)
-- ARGV[6]  limit
-- ARGV[7]  since: epoch microseconds (exclusive), "" for all
-- ARGV[8]  "1" to include bodies
-- ARGV[9]  most topic entries to scan
-- Returns {"ok", JSON array text} or an error table.
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix, name = ARGV[1], string.lower(agent.name)
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[9])
local low = ARGV[7] ~= "" and ("(" .. ARGV[7]) or "-inf"
local bodies = ARGV[8] == "1"
local items = {}
local offset = 0
while #items < limit and offset < budget do
  local ids = redis.call("ZREVRANGEBYSCORE", pkey(prefix, "topic:" .. ARGV[5]), "+inf", low, "LIMIT", offset, 256)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, id in ipairs(ids) do
    local msg = redis.call("HMGET", pkey(prefix, "msg:" .. id), "head", "sender", "rk:" .. name)
    if msg[1] and (msg[2] == name or msg[3]) then
      local item = msg[1]
      if bodies then
        local body = redis.call("HGET", pkey(prefix, "bodies"), id) or ""
        item = string.sub(item, 1, -2) .. ',"body_md":' .. cjson.encode(body) .. "}"
      end
      table.insert(items, item)
      if #items >= limit then break end
    end
  end
end
return {"ok", "[" .. table.concat(items, ",") .. "]"}
