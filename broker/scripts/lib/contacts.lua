-- Contact links, contact policies, and the pieces of a delivery that several scripts share
-- (send_message, contact_request, contact_respond), and forgetting the links of a deleted
-- agent (hard_delete_agent, link_forget). See broker/mail/contacts.py.
--
-- A link A->B ("A asked to write to B") is kept twice, once in each endpoint's project, so a
-- script running in either project reads it locally:
--   A's project: links:<lower A>  field "out:<slug B>#<lower B>"
--   B's project: links:<lower B>  field "in:<slug A>#<lower A>"
-- Value: link JSON {a, a_id, a_pid, a_slug, a_hk, b, b_id, b_pid, b_slug, b_hk, status
-- (pending|approved|blocked), reason, created_ts, updated_ts, upd_us, expires_ts (absent when
-- none), exp_us ("" when none)}; *_us are epoch microseconds as decimal text.
-- Messages held until B approves A: held:<lower B>:<slug A>#<lower A> ZSET message id scored by
-- the hold's deadline (us); the held recipient's kind is the message hash field hk:<lower B>.
-- A held message delivered on approval enters the inbox long after created_us, so its inbox
-- entry id is kept in the message hash field dc:<lower B> (wait_for_mail's after_id finds it).
-- Thread participants (for contacts_only): tpart:<thread_id> SET of lower names, and
-- "project:<slug>#<lower>" for senders from other projects.
-- @include lib/common.lua

-- Server time now plus `seconds`: iso text and microseconds text.
local function time_after(seconds)
  local t = redis.call("TIME")
  local sec, usec = tonumber(t[1]) + seconds, tonumber(t[2])
  return iso_from_time(sec, usec), string.format("%d", sec) .. string.format("%06d", usec)
end

local function is_set(value)
  return value ~= nil and value ~= false and value ~= cjson.null
end

-- An approved link whose expiry is still ahead (link JSON text or false).
local function link_live(raw, now_us)
  if not raw then return false end
  local link = cjson.decode(raw)
  return link.status == "approved" and link.exp_us ~= "" and tonumber(link.exp_us) > tonumber(now_us)
end

-- Whether `member` took part in thread `thread_id` (sent or received a message of it); a
-- numeric thread id is also the id of its unthreaded first message.
local function takes_part(prefix, thread_id, member)
  if redis.call("SISMEMBER", pkey(prefix, "tpart:" .. thread_id), member) == 1 then return true end
  if string.match(thread_id, "^%d+$") then
    local m = redis.call("HMGET", pkey(prefix, "msg:" .. thread_id), "sender", "rk:" .. member)
    return m[1] == member or (m[2] ~= false and m[2] ~= nil)
  end
  return false
end

-- Whether `recipient` (its agent record, in this project) takes new mail from sender `s`
-- ({lower, slug, ident, same}): nil, or the reason it does not: "AGENT_RETIRED",
-- "CONTACT_BLOCKED" (block_all, or it refused the sender) or "CONTACT_REQUIRED" (no approved
-- link). `intro` (a contact request's intro mail) skips the link and thread checks only.
local function contact_verdict(prefix, recipient, r_lower, s, thread_id, now_us, intro)
  if s.same and r_lower == s.lower then return nil end
  if is_set(recipient.retired_at) then return "AGENT_RETIRED" end
  local policy = recipient.contact_policy
  if policy == "block_all" then return "CONTACT_BLOCKED" end
  if policy == "open" then return nil end
  local skey = s.slug .. "#" .. s.lower
  local links = redis.call("HMGET", pkey(prefix, "links:" .. r_lower), "in:" .. skey, "out:" .. skey)
  if links[1] and cjson.decode(links[1]).status == "blocked" then return "CONTACT_BLOCKED" end
  if intro then return nil end
  if policy ~= "contacts_only" and s.same then return nil end
  if link_live(links[1], now_us) or link_live(links[2], now_us) then return nil end
  if policy == "contacts_only" and thread_id ~= "" and takes_part(prefix, thread_id, s.ident)
    and takes_part(prefix, thread_id, r_lower) then
    return nil
  end
  return "CONTACT_REQUIRED"
end

-- The sender of a write in this project: an agent of it (authenticated here), or one of
-- another project already authenticated there (`foreign` JSON {name, id, project_id, slug,
-- human_key}). Returns s = {name, lower, id, pid, slug, hk, ident, same, agent}, or nil and an
-- error reply.
local function resolve_sender(project_key, agents_key, slug, hk, pid, name, digest, require, foreign)
  if foreign ~= "" then
    local f = cjson.decode(foreign)
    local lower = string.lower(f.name)
    return {name = f.name, lower = lower, id = f.id, pid = f.project_id, slug = f.slug, hk = f.human_key,
      ident = "project:" .. f.slug .. "#" .. lower, same = false}, nil
  end
  local agent, err = resolve_agent(project_key, agents_key, name, digest, require)
  if err then return nil, err end
  local lower = string.lower(agent.name)
  return {name = agent.name, lower = lower, id = agent.id, pid = tonumber(pid), slug = slug, hk = hk,
    ident = lower, same = true, agent = agent}, nil
end

-- Head JSON of a new message (the inbox item without kind and body); `attachments` is the
-- JSON list of its attachments' metadata (nil for none).
local function message_head(id, project_id, s, thread_id, topic, subject, importance, ack, iso, attachments)
  local head = '{"id":' .. id
    .. ',"project_id":' .. project_id
    .. ',"sender_id":' .. string.format("%d", s.id)
    .. ',"thread_id":' .. jstr(thread_id)
    .. ',"topic":' .. jstr(topic)
    .. ',"subject":' .. cjson.encode(subject)
    .. ',"importance":' .. cjson.encode(importance)
    .. ',"ack_required":' .. (ack and "true" or "false")
    .. ',"created_ts":"' .. iso .. '"'
    .. ',"attachments":' .. (attachments or "[]")
    .. ',"from":' .. cjson.encode(s.name)
  if not s.same then
    head = head .. ',"from_project":' .. cjson.encode(s.hk) .. ',"from_project_slug":' .. cjson.encode(s.slug)
      .. ',"from_address":' .. cjson.encode("project:" .. s.slug .. "#" .. s.name)
  end
  return head .. '}'
end

-- What delivering one message to a recipient needs, computed once per message.
local function delivery_context(prefix, id, head, us, importance, topic, body, inline_limit, doorbell, slug)
  local urgent = (importance == "high" or importance == "urgent") and "1" or "0"
  return {
    prefix = prefix, id = id, msg_key = pkey(prefix, "msg:" .. id),
    item_prefix = string.sub(head, 1, -2) .. ',"kind":"',
    urgent = urgent, topic_lower = string.lower(topic), us = us,
    filter = us .. "|" .. urgent .. "|" .. string.lower(topic),
    body = string.len(body) <= tonumber(inline_limit) and body or nil,
    doorbell = doorbell, slug = slug,
  }
end

-- Deliver a stored message to one recipient: its kind on the message, an inbox entry (the
-- item JSON, and the body when small; "f" = "<created_us>|<urgent 0/1>|<lower topic>" for the
-- filters), unread, the urgent and topic indexes, and one doorbell event. Returns the entry id.
local function deliver_to(ctx, lower, kind)
  redis.call("HSET", ctx.msg_key, "rk:" .. lower, kind)
  local item = ctx.item_prefix .. kind .. '"}'
  local inbox = pkey(ctx.prefix, "inbox:" .. lower)
  local cursor
  if ctx.body then
    cursor = redis.call("XADD", inbox, "*", "m", ctx.id, "f", ctx.filter, "j", item, "b", ctx.body)
  else
    cursor = redis.call("XADD", inbox, "*", "m", ctx.id, "f", ctx.filter, "j", item)
  end
  redis.call("SADD", pkey(ctx.prefix, "unread:" .. lower), ctx.id)
  if ctx.urgent == "1" then redis.call("ZADD", pkey(ctx.prefix, "urgent:" .. lower), ctx.us, ctx.id) end
  if ctx.topic_lower ~= "" then
    redis.call("ZADD", pkey(ctx.prefix, "rtopic:" .. lower .. ":" .. ctx.topic_lower), ctx.us, ctx.id)
  end
  redis.call("SPUBLISH", ctx.doorbell, '{"project":' .. cjson.encode(ctx.slug) .. ',"agent":' .. cjson.encode(lower)
    .. ',"id":' .. ctx.id .. ',"cursor":"' .. cursor .. '"}')
  return cursor
end

-- Forget held messages of one (recipient, sender) pair: all of them, or (only_expired) those
-- whose deadline passed. Returns how many were dropped.
local function drop_held(prefix, held_key, r_lower, now_us, only_expired)
  local dropped = only_expired and redis.call("ZRANGEBYSCORE", held_key, "-inf", now_us)
    or redis.call("ZRANGE", held_key, 0, -1)
  for _, id in ipairs(dropped) do
    redis.call("HDEL", pkey(prefix, "msg:" .. id), "hk:" .. r_lower)
    redis.call("ZREM", held_key, id)
  end
  return #dropped
end

-- Write link JSON into this project: the field of each endpoint that lives here.
local function store_link(prefix, link, here_slug, pending_key, ms)
  local members = {}
  local a_lower, b_lower = string.lower(link.a), string.lower(link.b)
  local raw = cjson.encode(link)
  if link.b_slug == here_slug then
    local field = "in:" .. link.a_slug .. "#" .. a_lower
    redis.call("HSET", pkey(prefix, "links:" .. b_lower), field, raw)
    members[#members + 1] = "link:" .. b_lower .. "|" .. field
  end
  if link.a_slug == here_slug then
    local field = "out:" .. link.b_slug .. "#" .. b_lower
    redis.call("HSET", pkey(prefix, "links:" .. a_lower), field, raw)
    members[#members + 1] = "link:" .. a_lower .. "|" .. field
  end
  return mark_pending_all(pending_key, ms, members)
end

-- Forget the copy of a contact link kept in this project by `owner` (field "in:<slug>#<name>"
-- or "out:<slug>#<name>") whose other endpoint is a deleted agent with id `gone_id`: the field,
-- its pending entry and, for an "in:" field (the deleted agent asked to write to the owner),
-- the mail it sent that is held for the owner (the set and the messages' held kinds). A copy
-- about another agent of that name (a newer one) is left alone. Returns 1 if a copy went.
local function forget_link(prefix, pending_key, owner, field, gone_id)
  local links = pkey(prefix, "links:" .. owner)
  local raw = redis.call("HGET", links, field)
  local inbound = string.sub(field, 1, 3) == "in:"
  if raw then
    local link = cjson.decode(raw)
    if tonumber(link[inbound and "a_id" or "b_id"]) ~= tonumber(gone_id) then return 0 end
    redis.call("HDEL", links, field)
  end
  redis.call("ZREM", pending_key, "link:" .. owner .. "|" .. field)
  if inbound then
    drop_held(prefix, pkey(prefix, "held:" .. owner .. ":" .. string.sub(field, 4)), owner, "0", false)
  end
  return raw and 1 or 0
end
