-- project_inbox: one page of a project's unified inbox (every agent's received mail, or one
-- agent's), newest first, for the overseers' web view (broker/web/). Read-only.
-- Each agent's inbox stream is walked newest first from the page's cursor; a message delivered
-- to several agents is listed once. Order is (created_us, message id), both descending: one key
-- per message, the same in every inbox, so the cursor "<created_us>:<id>" of a page's last row
-- starts the next page exactly. A stream is ordered by arrival, which is creation time to within
-- SLACK_MS, except for a message held for a contact approval: on pages after the first, one
-- delivered later than that is listed in the agent's own inbox and thread but may be passed over
-- here.
-- Each agent's walk looks at no more than ARGV[8] entries, so a page costs at most agents x that
-- many entries however large the project is; with no filter a walk stops soon after ARGV[7] + 1.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  cold hash (docs/data-model.md, "The hot window"): its mark "t" is read with the page
-- ARGV[1]  project key prefix "<p>:{slug}:" (inbox:, unread:, msg:)
-- ARGV[2]  lower-cased agent name to list only its inbox, "" for every agent of the project
-- ARGV[3]  cursor "<created_us>:<message id>": only older rows, "" for the newest
-- ARGV[4]  importance to keep ("low", "normal", "high", "urgent"), "" for any
-- ARGV[5]  "1": only messages the inbox's agent has not read
-- ARGV[6]  lower-cased topic to keep, "" for any
-- ARGV[7]  rows per page (1..1000)
-- ARGV[8]  most inbox entries one agent's walk looks at
-- A message several agents of the project received is listed once, with the first of to, cc,
-- bcc it was received as (the index's read does the same: broker/mail/cold_pages.py overseen).
-- Returns {"ok", human_key, "1" if every walk ended before its budget else "0", "1" if there
-- are more rows after this page else "0", the project's cold mark "t" or "", then per row: created_us, inbox item JSON (its kind
-- the first of to, cc, bcc it was received as), recipients JSON {to, cc, bcc}, receipts JSON
-- {<lower name>: [read_ts or "", ack_ts or ""]}} or {"NO_PROJECT"}.
-- @include lib/common.lua
local human_key = redis.call("HGET", KEYS[1], "human_key")
if not human_key then return {"NO_PROJECT"} end
local prefix = ARGV[1]
local SLACK_MS = 1000
local before_us, before_id
if ARGV[3] ~= "" then
  local us, id = string.match(ARGV[3], "^(%d+):(%d+)$")
  before_us, before_id = tonumber(us), tonumber(id)
end

-- whether row (us, id) a comes before row b, newest first
local function newer(a_us, a_id, b_us, b_id)
  if a_us ~= b_us then return a_us > b_us end
  return a_id > b_id
end
local importance = ARGV[4] ~= "" and ('"importance":' .. cjson.encode(ARGV[4])) or nil
local unread_only, topic = ARGV[5] == "1", ARGV[6]
local limit, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local CHUNK = 256
local filtering = importance ~= nil or unread_only or topic ~= ""

local names
if ARGV[2] ~= "" then names = {ARGV[2]} else names = redis.call("HKEYS", KEYS[2]) end

local rows, best, complete = {}, {}, true
local KIND_RANK = {to = 0, cc = 1, bcc = 2}
local function walk(lower)
  local inbox, unread = pkey(prefix, "inbox:" .. lower), pkey(prefix, "unread:" .. lower)
  local upper = before_us and string.format("%d", math.floor(before_us / 1000) + SLACK_MS) or "+"
  local seen, kept, oldest_kept = 0, 0, nil
  while seen < budget do
    local entries = redis.call("XREVRANGE", inbox, upper, "-", "COUNT", math.min(filtering and CHUNK or limit + 1, budget - seen))
    if #entries == 0 then return end
    seen = seen + #entries
    upper = "(" .. entries[#entries][1]
    for _, entry in ipairs(entries) do
      local ms = tonumber(string.match(entry[1], "^(%d+)"))
      -- enough rows, and what is left arrived too early to be newer than the page's rows
      if kept > limit and (ms + SLACK_MS) * 1000 < oldest_kept then return end
      local values, id, filter, item = entry[2], nil, "", nil
      for i = 1, #values, 2 do
        local name = values[i]
        if name == "m" then id = values[i + 1] elseif name == "f" then filter = values[i + 1]
        elseif name == "j" then item = values[i + 1] end
      end
      local n, us = tonumber(id), tonumber(string.match(filter, "^(%d+)")) or 0
      local after = not before_us or newer(before_us, before_id, us, n)
      local keep = after and item ~= nil
      if keep and importance then keep = string.find(item, importance, 1, true) ~= nil end
      if keep and topic ~= "" then keep = string.match(filter, "^[^|]*|[^|]*|(.*)$") == topic end
      if keep and unread_only then keep = redis.call("SISMEMBER", unread, id) == 1 end
      if keep then
        -- one row per message: of the inboxes it is in, the kind named first (to, then cc, bcc)
        local rank = KIND_RANK[string.match(item, '"kind":"(%a+)"') or ""] or 3
        local at = best[id]
        if at == nil then
          table.insert(rows, {us, n, id, item, rank})
          best[id] = #rows
        elseif rank < rows[at][5] then
          rows[at] = {us, n, id, item, rank}
        end
        kept = kept + 1
        -- the oldest of the first ARGV[7] + 1 rows kept: no older than the page can reach
        if kept <= limit + 1 and (not oldest_kept or us < oldest_kept) then oldest_kept = us end
      end
    end
  end
  complete = false
end
for _, lower in ipairs(names) do walk(string.lower(lower)) end

table.sort(rows, function(a, b) return newer(a[1], a[2], b[1], b[2]) end)
local reply, listed, shown = {"ok", human_key, complete and "1" or "0", "0", redis.call("HGET", KEYS[3], "t") or ""}, {}, 0
for _, row in ipairs(rows) do
  if not listed[row[3]] then
    if shown == limit then reply[4] = "1" break end
    listed[row[3]] = true
    shown = shown + 1
    local msg_key = pkey(prefix, "msg:" .. row[3])
    local recipients = redis.call("HGET", msg_key, "recipients") or '{"to":[],"cc":[],"bcc":[]}'
    local decoded, receipts = cjson.decode(recipients), {}
    for _, kind in ipairs({"to", "cc", "bcc"}) do
      for _, name in ipairs(decoded[kind] or {}) do
        local lower = string.lower(name)
        local times = redis.call("HMGET", msg_key, "rt:" .. lower, "at:" .. lower)
        receipts[lower] = {times[1] or "", times[2] or ""}
      end
    end
    table.insert(reply, string.format("%d", row[1]))
    table.insert(reply, row[4])
    table.insert(reply, recipients)
    table.insert(reply, next(receipts) and cjson.encode(receipts) or "{}")
  end
end
return reply
