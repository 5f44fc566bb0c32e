-- send_message: store a message and deliver it to every recipient, all or none.
-- One call: resolve and authenticate the sender (or take a sender of another project, already
-- authenticated there), resolve recipients (or expand a broadcast), check each recipient's
-- contact policy (lib/contacts.lua), and only when every check passed: store the message,
-- append to each recipient's inbox stream, hold it for recipients that only lack a contact
-- link (when asked to), index thread, urgency and topic, add the id to the project's
-- pending-persistence set and ring one doorbell per recipient. Every check comes before the
-- first write.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  active hash (name -> last_active_ts)
-- KEYS[4]  pending-persistence zset
-- KEYS[5]  optional: the idempotency record of this (sender, key) (see broker/mail/idempotency.py);
--          when given, the last two ARGV are the window in ms and the request's fingerprint
-- ARGV[1]  project key prefix "<p>:{slug}:" (bodies, msg:, inbox:, urgent:, rtopic:, stopic:,
--          outbox:, unread:, thread:, tpart:, links:, held:, rate:)
-- ARGV[2]  the project's doorbell shard channel (SPUBLISH)
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
-- ARGV[14] broadcast cutoff: "" for no broadcast, else the oldest last_active_ts that counts;
--          a broadcast skips (and reports) recipients that do not take mail from the sender
-- ARGV[15] largest body (bytes) copied into inbox entries; larger ones live only in "bodies"
-- ARGV[16] most recipients one message may reach; a broadcast also reads the project's agents
--          only while they number at most twice this plus the sender (bounds the scan before it starts)
-- ARGV[17] number of `to` names
-- ARGV[18] number of `cc` names
-- ARGV[19] "1": hold the message for recipients that lack only a contact link, "0": refuse
-- ARGV[20] "1": a contact request's intro mail (no link or thread check); "2": the human
--          overseer's mail (broker/web/), delivered past every contact policy (to a retired agent: no)
-- ARGV[21] sender of another project, JSON {name, id, project_id, slug, human_key}, or ""
-- ARGV[22] seconds a held message waits for the contact to be approved
-- ARGV[23] most messages one sender may have held for one recipient
-- ARGV[24] the sender's rate-limit spec "<per second>:<burst>", "" for none (lib/ratelimit.lua);
--          applies to a sender of this project (one of another project is limited in its own)
-- ARGV[25] the message's attachments: a JSON list of their metadata (broker/mail/attachments.py),
--          "[]" for none; bounded in size: image bytes never pass through here, only inline
--          data URIs of at most INLINE_IMAGE_MAX_BYTES per message
-- ARGV[26..] lower-cased names: to, then cc, then bcc (then the idempotency pair, with KEYS[5])
-- Returns {"ok", head JSON, recipients JSON {to,cc,bcc}, human_key, 1 if a persistence job
-- must be enqueued (see mark_pending) else 0, held JSON [{name, kind}], skipped JSON
-- [{recipient, reason}]}, or
-- {"NO_PROJECT"}, {"NO_AGENT", name}, {"BAD_TOKEN"|"AUTH_REQUIRED", name},
-- {"PROJECT_ARCHIVED", human_key}, {"UNKNOWN_RECIPIENTS", name...},
-- {"AGENT_RETIRED"|"CONTACT_BLOCKED"|"CONTACT_REQUIRED"|"HOLD_FULL", name...} (HOLD_FULL: ARGV[23]
-- messages from this sender are already held for them),
-- {"TOO_MANY_RECIPIENTS", count}, {"BROADCAST_TOO_LARGE", agents registered},
-- {"NO_RECIPIENTS", skipped JSON}, {"IDEMPOTENCY_CONFLICT"} (the key
-- was used for other content), {"RATE_LIMITED", milliseconds to wait}; on every error nothing is
-- written. A key already used for the same content returns the first "ok" reply (persistence flag 0)
-- and writes nothing.
-- @include lib/common.lua
-- @include lib/contacts.lua
-- @include lib/ratelimit.lua
local prefix = ARGV[1]
local project = redis.call("HMGET", KEYS[1], "id", "human_key", "archived_at")
if not project[1] then return {"NO_PROJECT"} end
if project[3] then return {"PROJECT_ARCHIVED", project[2]} end
local s, err = resolve_sender(KEYS[1], KEYS[2], ARGV[3], project[2], project[1], ARGV[5], ARGV[6], ARGV[7], ARGV[21])
if err then return err end
-- Idempotency: checked after the sender proved who it is, recorded below with the delivery.
local last, idem = #ARGV, KEYS[5]
if idem then
  last = last - 2
  local first = redis.call("GET", idem)
  if first then
    if string.sub(first, 1, 64) ~= ARGV[#ARGV] then return {"IDEMPOTENCY_CONFLICT"} end
    local r = cjson.decode(string.sub(first, 65))
    return {"ok", r[1], r[2], r[3], 0, r[4], r[5]}
  end
end
local iso, us, ms = now()
-- Admitted by the sender's bucket before any work; it pays one token plus one per ten deliveries.
local bucket_state = s.same and rate_open(pkey(prefix, "rate:" .. s.lower), ARGV[24], ms) or nil
local wait = rate_wait(bucket_state)
if wait then return {"RATE_LIMITED", wait} end
local thread_id, topic = ARGV[12], ARGV[13]
local broadcast, hold, intro, overseer = ARGV[14] ~= "", ARGV[19] == "1", ARGV[20] == "1", ARGV[20] == "2"

-- Resolve recipients; an agent named twice keeps its strongest kind (to > cc > bcc).
local lists = {to = {}, cc = {}, bcc = {}}
local targets, held, skipped = {}, {}, {}
local refused = {}
local seen = {}
local unknown = {"UNKNOWN_RECIPIENTS"}
local function consider(agent, lower, kind)
  local verdict
  if overseer then
    verdict = is_set(agent.retired_at) and "AGENT_RETIRED" or nil
  else
    verdict = contact_verdict(prefix, agent, lower, s, thread_id, us, intro)
  end
  if not verdict then
    table.insert(lists[kind], agent.name)
    table.insert(targets, {lower, kind})
  elseif broadcast then
    table.insert(skipped, {recipient = agent.name, reason = verdict})
  elseif verdict == "CONTACT_REQUIRED" and hold then
    local held_key = pkey(prefix, "held:" .. lower .. ":" .. s.slug .. "#" .. s.lower)
    if redis.call("ZCOUNT", held_key, "(" .. us, "+inf") >= tonumber(ARGV[23]) then
      refused.HOLD_FULL = refused.HOLD_FULL or {"HOLD_FULL"}
      table.insert(refused.HOLD_FULL, agent.name)
    else
      table.insert(held, {lower, kind, agent.name})
    end
  else
    refused[verdict] = refused[verdict] or {verdict}
    table.insert(refused[verdict], agent.name)
  end
end
local nto, ncc = tonumber(ARGV[17]), tonumber(ARGV[18])
for i = 26, last do
  local idx = i - 25
  local kind = idx <= nto and "to" or (idx <= nto + ncc and "cc" or "bcc")
  local lower = ARGV[i]
  if not seen[lower] then
    seen[lower] = true
    local agent = load_agent(KEYS[2], lower)
    if agent then consider(agent, lower, kind) else table.insert(unknown, lower) end
  end
end
if broadcast then
  -- Joining is free, so the project's agents are counted before they are read: each costs a
  -- decode and a lookup, and a crowded project must not hold Redis for every broadcast.
  local registered = redis.call("HLEN", KEYS[2])
  if registered > 2 * tonumber(ARGV[16]) + 1 then return {"BROADCAST_TOO_LARGE", registered} end
  local all = redis.call("HGETALL", KEYS[2])
  local found = {}
  for i = 1, #all, 2 do
    if not (s.same and all[i] == s.lower) and not seen[all[i]] then
      local agent = cjson.decode(all[i + 1])
      local active = redis.call("HGET", KEYS[3], agent.name)
      if active and active >= ARGV[14] then table.insert(found, agent) end
    end
  end
  table.sort(found, function(x, y) return x.name < y.name end)
  for _, agent in ipairs(found) do
    if #targets > tonumber(ARGV[16]) then break end -- refused below whatever the rest would be
    consider(agent, string.lower(agent.name), "to")
  end
end
if #unknown > 1 then return unknown end
for _, code in ipairs({"AGENT_RETIRED", "CONTACT_BLOCKED", "CONTACT_REQUIRED", "HOLD_FULL"}) do
  if refused[code] then return refused[code] end
end
if #targets + #held > tonumber(ARGV[16]) then return {"TOO_MANY_RECIPIENTS", #targets + #held} end
local skipped_json = #skipped == 0 and "[]" or cjson.encode(skipped)
if #targets == 0 and #held == 0 then return {"NO_RECIPIENTS", skipped_json} end

local id = ARGV[4]
local head = message_head(id, project[1], s, thread_id, topic, ARGV[8], ARGV[10], ARGV[11] == "1", iso,
  ARGV[25])
local recipients = '{"to":' .. jlist(lists.to) .. ',"cc":' .. jlist(lists.cc) .. ',"bcc":' .. jlist(lists.bcc) .. '}'
local msg_key = pkey(prefix, "msg:" .. id)
redis.call("HSET", msg_key, "head", head, "sender", s.ident, "recipients", recipients, "created_us", us)
redis.call("HSET", pkey(prefix, "bodies"), id, ARGV[9])

local ctx = delivery_context(prefix, id, head, us, ARGV[10], topic, ARGV[9], ARGV[15], ARGV[2], ARGV[3])
for _, t in ipairs(targets) do deliver_to(ctx, t[1], t[2]) end
local held_out = {}
if #held > 0 then
  local deadline = tonumber(us) + tonumber(ARGV[22]) * 1000000
  for _, h in ipairs(held) do
    local held_key = pkey(prefix, "held:" .. h[1] .. ":" .. s.slug .. "#" .. s.lower)
    drop_held(prefix, held_key, h[1], us, true)
    redis.call("ZADD", held_key, string.format("%d", deadline), id)
    redis.call("HSET", msg_key, "hk:" .. h[1], h[2])
    table.insert(held_out, {name = h[3], kind = h[2]})
  end
end
local topic_lower = string.lower(topic)
if s.same then
  redis.call("XADD", pkey(prefix, "outbox:" .. s.lower), "*", "m", id, "c", us)
  if topic ~= "" then redis.call("ZADD", pkey(prefix, "stopic:" .. s.lower .. ":" .. topic_lower), us, id) end
  redis.call("HSET", KEYS[3], s.name, iso)
end
if thread_id ~= "" then
  redis.call("ZADD", pkey(prefix, "thread:" .. thread_id), us, id)
  local members = {s.ident}
  for _, t in ipairs(targets) do members[#members + 1] = t[1] end
  redis.call("SADD", pkey(prefix, "tpart:" .. thread_id), unpack(members))
end
local schedule = mark_pending(KEYS[4], ms, "msg:" .. id)
local held_json = #held_out == 0 and "[]" or cjson.encode(held_out)
if idem then
  redis.call("SET", idem, ARGV[#ARGV] .. cjson.encode({head, recipients, project[2], held_json, skipped_json}),
    "PX", ARGV[#ARGV - 1])
end
rate_pay(bucket_state, 1 + math.floor((#targets + #held) / 10))
return {"ok", head, recipients, project[2], schedule, held_json, skipped_json}
