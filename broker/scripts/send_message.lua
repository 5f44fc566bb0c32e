-- send_message: store a message and deliver it to every recipient, all or none.
-- One call: resolve and authenticate the sender, resolve recipients (or expand a broadcast),
-- and only when every check passed: store the message, append to each recipient's inbox
-- stream, index thread, urgency and topic, add the id to the project's pending-persistence
-- set and ring one doorbell per recipient. Every check comes before the first write.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  active hash (name -> last_active_ts)
-- KEYS[4]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:" (bodies, msg:, inbox:, urgent:, rtopic:, stopic:,
--          outbox:, unread:, thread:)
-- ARGV[2]  doorbell channel
-- ARGV[3]  project slug (for the doorbell event)
-- ARGV[4]  message id
-- ARGV[5]  sender name (any case)
-- ARGV[6]  SHA-256 hex of the sender token passed, "" for none
-- ARGV[7]  "1" if a sender token is required
-- ARGV[8]  subject
-- ARGV[9]  body_md
-- ARGV[10] importance
-- ARGV[11] ack_required "1" | "0"
-- ARGV[12] thread_id, "" for none
-- ARGV[13] topic, "" for none
-- ARGV[14] broadcast cutoff: "" for no broadcast, else the oldest last_active_ts that counts
-- ARGV[15] largest body (bytes) copied into inbox entries; larger ones live only in "bodies"
-- ARGV[16] most recipients one message may reach (bounds a broadcast's work)
-- ARGV[17] number of `to` names, ARGV[18] number of `cc` names
-- ARGV[19..] lower-cased names: to, then cc, then bcc
-- Returns {"ok", head JSON, recipients JSON {to,cc,bcc}, human_key, 1 if a persistence job
-- must be enqueued (see mark_pending) else 0}, or
-- {"NO_PROJECT"}, {"NO_AGENT", name}, {"BAD_TOKEN"|"AUTH_REQUIRED", name},
-- {"UNKNOWN_RECIPIENTS", name...}, {"TOO_MANY_RECIPIENTS", count}, {"NO_RECIPIENTS"};
-- on every error nothing is written.
local prefix = ARGV[1]
local project = redis.call("HMGET", KEYS[1], "id", "human_key")
if not project[1] then return {"NO_PROJECT"} end
local sender_lower = string.lower(ARGV[5])
local sender = load_agent(KEYS[2], sender_lower)
if not sender then return {"NO_AGENT", ARGV[5]} end
local err = auth_error(sender, ARGV[6], ARGV[7])
if err then return {err, sender.name} end

-- Resolve recipients; an agent named twice keeps its strongest kind (to > cc > bcc).
local lists = {to = {}, cc = {}, bcc = {}}
local targets = {}
local seen = {}
local unknown = {"UNKNOWN_RECIPIENTS"}
local nto, ncc = tonumber(ARGV[17]), tonumber(ARGV[18])
for i = 19, #ARGV do
  local idx = i - 18
  local kind = idx <= nto and "to" or (idx <= nto + ncc and "cc" or "bcc")
  local lower = ARGV[i]
  if not seen[lower] then
    seen[lower] = true
    local agent = load_agent(KEYS[2], lower)
    if agent then
      -- Contact policies (a later issue) are checked here, before anything is written.
      table.insert(lists[kind], agent.name)
      table.insert(targets, {lower, kind})
    else
      table.insert(unknown, lower)
    end
  end
end
if ARGV[14] ~= "" then
  local all = redis.call("HGETALL", KEYS[2])
  local names = {}
  for i = 1, #all, 2 do
    if all[i] ~= sender_lower and not seen[all[i]] then
      local agent = cjson.decode(all[i + 1])
      local active = redis.call("HGET", KEYS[3], agent.name)
      if active and active >= ARGV[14] then table.insert(names, agent.name) end
    end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    table.insert(lists.to, name)
    table.insert(targets, {string.lower(name), "to"})
  end
end
if #unknown > 1 then return unknown end
if #targets > tonumber(ARGV[16]) then return {"TOO_MANY_RECIPIENTS", #targets} end
if #targets == 0 then return {"NO_RECIPIENTS"} end  -- a broadcast with nobody else active

local iso, us, ms = now()
local id = ARGV[4]
local thread_id, topic = ARGV[12], ARGV[13]
local urgent = (ARGV[10] == "high" or ARGV[10] == "urgent") and "1" or "0"
local topic_lower = string.lower(topic)
local head = '{"id":' .. id
  .. ',"project_id":' .. project[1]
  .. ',"sender_id":' .. string.format("%d", sender.id)
  .. ',"thread_id":' .. jstr(thread_id)
  .. ',"topic":' .. jstr(topic)
  .. ',"subject":' .. cjson.encode(ARGV[8])
  .. ',"importance":' .. cjson.encode(ARGV[10])
  .. ',"ack_required":' .. (ARGV[11] == "1" and "true" or "false")
  .. ',"created_ts":"' .. iso .. '"'
  .. ',"attachments":[]'
  .. ',"from":' .. cjson.encode(sender.name) .. '}'
local recipients = '{"to":' .. jlist(lists.to) .. ',"cc":' .. jlist(lists.cc) .. ',"bcc":' .. jlist(lists.bcc) .. '}'

local msg_key = pkey(prefix, "msg:" .. id)
redis.call("HSET", msg_key, "head", head, "sender", sender_lower, "recipients", recipients, "created_us", us)
redis.call("HSET", pkey(prefix, "bodies"), id, ARGV[9])

-- Inbox entries carry the item JSON (head plus kind) and, when small, the body, so an inbox
-- page is one XREVRANGE; "f" holds what filters need: "<created_us>|<urgent 0/1>|<lower topic>".
-- Urgent and topic reads use the per-agent sorted sets instead of scanning the inbox.
local filter = us .. "|" .. urgent .. "|" .. topic_lower
local inline_body = string.len(ARGV[9]) <= tonumber(ARGV[15]) and ARGV[9] or nil
local item_prefix = string.sub(head, 1, -2) .. ',"kind":"'
for _, t in ipairs(targets) do
  local lower, kind = t[1], t[2]
  redis.call("HSET", msg_key, "rk:" .. lower, kind)
  local item = item_prefix .. kind .. '"}'
  local cursor
  if inline_body then
    cursor = redis.call("XADD", pkey(prefix, "inbox:" .. lower), "*", "m", id, "f", filter, "j", item, "b", inline_body)
  else
    cursor = redis.call("XADD", pkey(prefix, "inbox:" .. lower), "*", "m", id, "f", filter, "j", item)
  end
  redis.call("SADD", pkey(prefix, "unread:" .. lower), id)
  if urgent == "1" then redis.call("ZADD", pkey(prefix, "urgent:" .. lower), us, id) end
  if topic ~= "" then redis.call("ZADD", pkey(prefix, "rtopic:" .. lower .. ":" .. topic_lower), us, id) end
  redis.call("PUBLISH", ARGV[2], '{"project":' .. cjson.encode(ARGV[3]) .. ',"agent":' .. cjson.encode(lower)
    .. ',"id":' .. id .. ',"cursor":"' .. cursor .. '"}')
end
redis.call("XADD", pkey(prefix, "outbox:" .. sender_lower), "*", "m", id, "c", us)
if topic ~= "" then redis.call("ZADD", pkey(prefix, "stopic:" .. sender_lower .. ":" .. topic_lower), us, id) end
redis.call("HSET", KEYS[3], sender.name, iso)
if thread_id ~= "" then redis.call("ZADD", pkey(prefix, "thread:" .. thread_id), us, id) end
local schedule = mark_pending(KEYS[4], ms, "msg:" .. id)
return {"ok", head, recipients, project[2], schedule}
