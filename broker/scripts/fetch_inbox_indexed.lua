-- fetch_inbox_indexed: an inbox page filtered by urgency and/or topic, newest first, read from
-- the per-agent indexes that send_message keeps (urgent:<agent>, rtopic:<agent>:<topic>), so
-- the work is bounded by the matching messages, not by the size of the inbox. Read-only.
-- With both filters it walks the agent's urgent messages and keeps those with the topic.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  cold hash (docs/data-model.md, "The hot window"): the inbox's mark is read with the page
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  limit (1..1000)
-- ARGV[6]  since: only messages created strictly after these epoch microseconds, "" for all
-- ARGV[7]  "1" for urgent only (importance high or urgent)
-- ARGV[8]  lower(topic) to match, "" for any
-- ARGV[9]  "1" to include bodies
-- Returns {"ok", JSON array of inbox items, the inbox's cold mark "in:<agent>" or ""} or an
-- error table.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix, me = ARGV[1], string.lower(agent.name)
local limit = tonumber(ARGV[5])
local low = ARGV[6] ~= "" and ("(" .. ARGV[6]) or "-inf"
local topic, bodies = ARGV[8], ARGV[9] == "1"
local topic_key = pkey(prefix, "rtopic:" .. me .. ":" .. topic)
local index = ARGV[7] == "1" and pkey(prefix, "urgent:" .. me) or topic_key
local check_topic = ARGV[7] == "1" and topic ~= ""
local items = {}
local offset = 0
while #items < limit do
  local ids = redis.call("ZREVRANGEBYSCORE", index, "+inf", low, "LIMIT", offset, check_topic and 256 or limit - #items)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, id in ipairs(ids) do
    if not check_topic or redis.call("ZSCORE", topic_key, id) then
      local msg = redis.call("HMGET", pkey(prefix, "msg:" .. id), "head", "rk:" .. me)
      if msg[1] and msg[2] then
        local item = string.sub(msg[1], 1, -2) .. ',"kind":"' .. msg[2] .. '"'
        if bodies then
          item = item .. ',"body_md":' .. cjson.encode(redis.call("HGET", pkey(prefix, "bodies"), id) or "")
        end
        table.insert(items, item .. "}")
        if #items >= limit then break end
      end
    end
  end
end
return {"ok", "[" .. table.concat(items, ",") .. "]", redis.call("HGET", KEYS[3], "in:" .. me) or ""}
