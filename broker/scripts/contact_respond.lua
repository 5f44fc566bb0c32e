-- contact_respond: the target of a contact link approves or refuses it, in the target's project.
-- Approving creates the link if missing, extends a live approval, and delivers the messages
-- held for the target from the requester whose hold has not expired; refusing marks the link
-- blocked. Either way held messages that were not delivered are dropped (they stay stored
-- and in the sender's outbox). Across projects the requester's copy of the link is written
-- afterwards by link_put.lua.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  project key prefix
-- ARGV[2]  the project's doorbell shard channel (SPUBLISH)
-- ARGV[3]  project slug
-- ARGV[4]  responder (target) name
-- ARGV[5]  SHA-256 hex of the responder's token, "" for none
-- ARGV[6]  "1" if the responder's token is required
-- ARGV[7]  requester of another project, JSON {name, id, project_id, slug, human_key}, or ""
-- ARGV[8]  requester name (when ARGV[7] is "")
-- ARGV[9]  "1" accept, "0" refuse
-- ARGV[10] ttl seconds of an approval (already at least the minimum)
-- ARGV[11] largest body (bytes) copied into inbox entries
-- Returns {"ok", link JSON or "" (refusal of no link), updated 0|1, delivered ids JSON,
-- persistence flag}, or {"NO_PROJECT"}, {"NO_AGENT", name}, {"BAD_TOKEN"|"AUTH_REQUIRED", name},
-- {"NO_REQUESTER", name}, {"PROJECT_ARCHIVED", human_key} (an approval would deliver held mail
-- into an archived project; a refusal only drops mail and still works).
-- @include lib/common.lua
-- @include lib/contacts.lua
local prefix = ARGV[1]
local project = redis.call("HMGET", KEYS[1], "id", "human_key", "archived_at")
if not project[1] then return {"NO_PROJECT"} end
if project[3] and ARGV[9] == "1" then return {"PROJECT_ARCHIVED", project[2]} end
local me, err = resolve_agent(KEYS[1], KEYS[2], ARGV[4], ARGV[5], ARGV[6])
if err then return err end
local a
if ARGV[7] ~= "" then
  a = resolve_sender(KEYS[1], KEYS[2], ARGV[3], project[2], project[1], "", "", "", ARGV[7])
else
  local agent = load_agent(KEYS[2], string.lower(ARGV[8]))
  if not agent then return {"NO_REQUESTER", ARGV[8]} end
  a = {name = agent.name, lower = string.lower(agent.name), id = agent.id, pid = tonumber(project[1]),
    slug = ARGV[3], hk = project[2]}
end
local b_lower = string.lower(me.name)
local iso, us, ms = now()
local field = "in:" .. a.slug .. "#" .. a.lower
local raw = redis.call("HGET", pkey(prefix, "links:" .. b_lower), field)
local link = raw and cjson.decode(raw) or nil
local held_key = pkey(prefix, "held:" .. b_lower .. ":" .. a.slug .. "#" .. a.lower)
local delivered = {}
local schedule = 0
if ARGV[9] ~= "1" then
  drop_held(prefix, held_key, b_lower, us, false)
  if not link then return {"ok", "", 0, "[]", 0} end
  link.status, link.expires_ts, link.exp_us = "blocked", nil, ""
else
  local exp_iso, exp_us = time_after(tonumber(ARGV[10]))
  if link and link.status == "approved" and link.exp_us ~= "" and tonumber(link.exp_us) > tonumber(exp_us) then
    exp_iso, exp_us = link.expires_ts, link.exp_us
  end
  link = link or {created_ts = iso, reason = ""}
  link.status, link.expires_ts, link.exp_us = "approved", exp_iso, exp_us
  -- deliver what waited for this approval and is still within its deadline, oldest first (the
  -- set is scored by deadline, which follows sending order only while the hold ttl is unchanged)
  local waiting = {}
  for _, id in ipairs(redis.call("ZRANGEBYSCORE", held_key, "(" .. us, "+inf")) do
    local m = redis.call("HMGET", pkey(prefix, "msg:" .. id), "head", "recipients", "created_us", "hk:" .. b_lower)
    if m[1] and m[4] then waiting[#waiting + 1] = {id = id, m = m} end
  end
  table.sort(waiting, function(x, y)
    if x.m[3] ~= y.m[3] then return tonumber(x.m[3]) < tonumber(y.m[3]) end
    return tonumber(x.id) < tonumber(y.id)
  end)
  for _, w in ipairs(waiting) do
    local id, m = w.id, w.m
    local msg_key = pkey(prefix, "msg:" .. id)
    do
      local head = cjson.decode(m[1])
      local topic = is_set(head.topic) and head.topic or ""
      local body = redis.call("HGET", pkey(prefix, "bodies"), id) or ""
      local cursor = deliver_to(delivery_context(prefix, id, m[1], m[3], head.importance, topic, body, ARGV[11],
        ARGV[2], ARGV[3]), b_lower, m[4])
      redis.call("HSET", msg_key, "dc:" .. b_lower, cursor)
      local rcpt = cjson.decode(m[2])
      table.insert(rcpt[m[4]], me.name)
      redis.call("HSET", msg_key, "recipients", '{"to":' .. jlist(rcpt.to) .. ',"cc":' .. jlist(rcpt.cc)
        .. ',"bcc":' .. jlist(rcpt.bcc) .. '}')
      redis.call("HDEL", msg_key, "hk:" .. b_lower)
      if is_set(head.thread_id) then redis.call("SADD", pkey(prefix, "tpart:" .. head.thread_id), b_lower) end
      if mark_pending(KEYS[3], ms, "msg:" .. id) == 1 then schedule = 1 end
      table.insert(delivered, tonumber(id))
    end
  end
  drop_held(prefix, held_key, b_lower, us, false)
end
link.a, link.a_id, link.a_pid, link.a_slug, link.a_hk = a.name, a.id, a.pid, a.slug, a.hk
link.b, link.b_id, link.b_pid, link.b_slug, link.b_hk = me.name, me.id, tonumber(project[1]), ARGV[3], project[2]
link.updated_ts, link.upd_us = iso, us
if store_link(prefix, link, ARGV[3], KEYS[3], ms) == 1 then schedule = 1 end
return {"ok", cjson.encode(link), 1, #delivered == 0 and "[]" or cjson.encode(delivered), schedule}
