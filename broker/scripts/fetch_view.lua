-- fetch_view: the messages of one agent's inbox views (resource://views/...), read-only.
-- "urgent-unread": high/urgent messages not read yet, newest first, walked from the agent's
--   urgent index and kept when still in unread:<agent>.
-- "ack": ack-required messages not acknowledged yet, walked from the inbox stream newest first
--   (entries created at or before the cutoff only); returned newest or oldest first.
-- Either walk looks at no more than ARGV[7] index or stream entries, so the work is bounded
-- however large the inbox is; older entries are not considered.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  cold hash (docs/data-model.md, "The hot window"): the inbox's mark is read with the walk
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  "urgent-unread" | "ack"
-- ARGV[6]  limit (1..1000)
-- ARGV[7]  most entries to look at
-- ARGV[8]  "ack" only: newest stream id to consider ("+" for all; an entry id is the creation ms)
-- ARGV[9]  "ack" only: "newest" or "oldest" first
-- Returns {"ok", the inbox's cold mark "in:<agent>" or "", entries looked at, where the walk
-- stopped (the created_us of the last urgent index entry, or the last stream entry id; "" if
-- none), "1" if it ran out of entries else "0", item JSON, read_ts or "", item JSON, read_ts or
-- "", ...} (items carry kind, no body) or an error table.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix, me = ARGV[1], string.lower(agent.name)
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local CHUNK = 256
local found = {}  -- {item, read_ts} pairs, newest first
local seen, last, ended = 0, "", "0"

local function item_of(id, fields)
  -- fields = HMGET msg head, rk:<me>, rt:<me>, at:<me>
  return string.sub(fields[1], 1, -2) .. ',"kind":"' .. fields[2] .. '"}'
end

if ARGV[5] == "urgent-unread" then
  local unread = pkey(prefix, "unread:" .. me)
  local offset = 0
  local urgent = pkey(prefix, "urgent:" .. me)
  while #found < limit and offset < budget do
    local want = math.min(CHUNK, budget - offset)
    local ids = redis.call("ZREVRANGE", urgent, offset, offset + want - 1)
    if #ids < want then ended = "1" end
    if #ids == 0 then break end
    offset = offset + #ids
    for _, id in ipairs(ids) do
      seen, last = seen + 1, id
      if redis.call("SISMEMBER", unread, id) == 1 then
        local fields = redis.call("HMGET", pkey(prefix, "msg:" .. id), "head", "rk:" .. me, "rt:" .. me)
        if fields[1] and fields[2] then
          table.insert(found, {item_of(id, fields), fields[3] or ""})
          if #found >= limit then break end
        end
      end
    end
  end
  if last ~= "" then last = redis.call("ZSCORE", urgent, last) or "" end
else
  local newest_first = ARGV[9] == "newest"
  local inbox = pkey(prefix, "inbox:" .. me)
  local upper = ARGV[8]
  while seen < budget do
    local want = math.min(CHUNK, budget - seen)
    local entries = redis.call("XREVRANGE", inbox, upper, "-", "COUNT", want)
    if #entries < want then ended = "1" end
    if #entries == 0 then break end
    seen = seen + #entries
    last = entries[#entries][1]
    upper = "(" .. last
    for _, entry in ipairs(entries) do
      local values = entry[2]
      local id, item
      for i = 1, #values, 2 do
        if values[i] == "m" then id = values[i + 1] elseif values[i] == "j" then item = values[i + 1] end
      end
      if item and string.find(item, '"ack_required":true', 1, true) then
        local fields = redis.call("HMGET", pkey(prefix, "msg:" .. id), "head", "rk:" .. me, "rt:" .. me, "at:" .. me)
        if fields[1] and fields[2] and not fields[4] then
          table.insert(found, {item_of(id, fields), fields[3] or ""})
        end
      end
    end
    if newest_first and #found >= limit then break end
  end
  if not newest_first then
    local oldest = {}
    for i = #found, math.max(1, #found - limit + 1), -1 do table.insert(oldest, found[i]) end
    found = oldest
  end
end

local reply = {"ok", redis.call("HGET", KEYS[3], "in:" .. me) or "", seen, last, ended}
for i = 1, math.min(#found, limit) do
  table.insert(reply, found[i][1])
  table.insert(reply, found[i][2])
end
return reply
