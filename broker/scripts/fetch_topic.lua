-- fetch_topic: messages with one topic that the viewer sent or received, newest first.
-- Reads the viewer's own topic indexes (rtopic: received, stopic: sent), so every entry is
-- visible to the viewer and the work is bounded by the limit. Read-only.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  cold hash (docs/data-model.md, "The hot window"): its marks are read with the page
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  viewer name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  lower(topic)
-- ARGV[6]  limit (1..1000)
-- ARGV[7]  since: epoch microseconds (exclusive), "" for all
-- ARGV[8]  "1" to include bodies
-- Returns {"ok", JSON array text, the viewer's inbox cold mark "in:<viewer>" or "", the
-- project's cold mark "t" or ""} or an error table.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix, me, topic = ARGV[1], string.lower(agent.name), ARGV[5]
local limit = tonumber(ARGV[6])
local low = ARGV[7] ~= "" and ("(" .. ARGV[7]) or "-inf"
local bodies = ARGV[8] == "1"

-- Newest `limit` of each index, merged newest first; a message both sent and received by the
-- viewer (a note to self) appears once.
local received = redis.call("ZREVRANGEBYSCORE", pkey(prefix, "rtopic:" .. me .. ":" .. topic), "+inf", low, "WITHSCORES", "LIMIT", 0, limit)
local sent = redis.call("ZREVRANGEBYSCORE", pkey(prefix, "stopic:" .. me .. ":" .. topic), "+inf", low, "WITHSCORES", "LIMIT", 0, limit)
local merged = {}
local seen = {}
local i, j = 1, 1
while #merged < limit and (i <= #received or j <= #sent) do
  local id
  if j > #sent or (i <= #received and tonumber(received[i + 1]) >= tonumber(sent[j + 1])) then
    id = received[i]; i = i + 2
  else
    id = sent[j]; j = j + 2
  end
  if not seen[id] then
    seen[id] = true
    table.insert(merged, id)
  end
end

local items = {}
for _, id in ipairs(merged) do
  local head = redis.call("HGET", pkey(prefix, "msg:" .. id), "head")
  if head then
    if bodies then
      head = string.sub(head, 1, -2) .. ',"body_md":' .. cjson.encode(redis.call("HGET", pkey(prefix, "bodies"), id) or "") .. "}"
    end
    table.insert(items, head)
  end
end
local marks = redis.call("HMGET", KEYS[3], "in:" .. me, "t")
return {"ok", "[" .. table.concat(items, ",") .. "]", marks[1] or "", marks[2] or ""}
