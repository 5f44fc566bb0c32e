-- contact_request: create or renew the contact link requester -> target in the TARGET's
-- project, and deliver the intro mail when the request is new (or its earlier one expired).
-- In one project both copies of the link are written here; across projects the requester's
-- copy is written afterwards by link_put.lua in the requester's project.
-- KEYS[1]  project hash (target's project)
-- KEYS[2]  agents hash
-- KEYS[3]  active hash
-- KEYS[4]  pending-persistence zset
-- ARGV[1]  project key prefix
-- ARGV[2]  the project's doorbell shard channel (SPUBLISH)
-- ARGV[3]  project slug
-- ARGV[4]  requester name (any case; used when ARGV[7] is "")
-- ARGV[5]  SHA-256 hex of the requester's token, "" for none
-- ARGV[6]  "1" if the requester's token is required
-- ARGV[7]  requester of another project, JSON {name, id, project_id, slug, human_key}, or ""
-- ARGV[8]  target name (any case)
-- ARGV[9]  reason
-- ARGV[10] ttl seconds (already at least the minimum)
-- ARGV[11] message id for the intro mail
-- ARGV[12] intro body, "" for "<A> requests permission to contact <B>."
-- ARGV[13] largest body (bytes) copied into inbox entries
-- Returns {"ok", link JSON, intro head JSON or "" (no intro: the request was already live or
-- approved), persistence flag}, or {"NO_PROJECT"}, {"NO_AGENT", name}, {"BAD_TOKEN"|
-- "AUTH_REQUIRED", name}, {"PROJECT_ARCHIVED", hk}, {"NO_TARGET", name}, {"SELF"},
-- {"AGENT_RETIRED", name}, {"CONTACT_BLOCKED", name, "block_all"|"refused"}.
-- @include lib/common.lua
-- @include lib/contacts.lua
local prefix = ARGV[1]
local project = redis.call("HMGET", KEYS[1], "id", "human_key", "archived_at")
if not project[1] then return {"NO_PROJECT"} end
if project[3] then return {"PROJECT_ARCHIVED", project[2]} end
local s, err = resolve_sender(KEYS[1], KEYS[2], ARGV[3], project[2], project[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if err then return err end
local t_lower = string.lower(ARGV[8])
local target = load_agent(KEYS[2], t_lower)
if not target then return {"NO_TARGET", ARGV[8]} end
if s.same and t_lower == s.lower then return {"SELF"} end
if is_set(target.retired_at) then return {"AGENT_RETIRED", target.name} end
if target.contact_policy == "block_all" then return {"CONTACT_BLOCKED", target.name, "block_all"} end

local iso, us, ms = now()
local field = "in:" .. s.slug .. "#" .. s.lower
local raw = redis.call("HGET", pkey(prefix, "links:" .. t_lower), field)
local link = raw and cjson.decode(raw) or nil
if link and link.status == "blocked" then return {"CONTACT_BLOCKED", target.name, "refused"} end
local exp_iso, exp_us = time_after(tonumber(ARGV[10]))
local live = link and link.exp_us ~= "" and tonumber(link.exp_us) > tonumber(us)
local notify = not live
if live then
  -- a live request or approval stays what it is; its expiry only grows
  if tonumber(link.exp_us) > tonumber(exp_us) then exp_iso, exp_us = link.expires_ts, link.exp_us end
else
  link = {status = "pending", created_ts = iso}
  drop_held(prefix, pkey(prefix, "held:" .. t_lower .. ":" .. s.slug .. "#" .. s.lower), t_lower, us, true)
end
link.a, link.a_id, link.a_pid, link.a_slug, link.a_hk = s.name, s.id, s.pid, s.slug, s.hk
link.b, link.b_id, link.b_pid, link.b_slug, link.b_hk =
  target.name, target.id, tonumber(project[1]), ARGV[3], project[2]
if ARGV[9] ~= "" or not link.reason then link.reason = ARGV[9] end
link.updated_ts, link.upd_us, link.expires_ts, link.exp_us = iso, us, exp_iso, exp_us
local schedule = store_link(prefix, link, ARGV[3], KEYS[4], ms)

local intro = ""
if notify then
  local id = ARGV[11]
  local body = ARGV[12] ~= "" and ARGV[12] or (s.name .. " requests permission to contact " .. target.name .. ".")
  intro = message_head(id, project[1], s, "", "", "Contact request from " .. s.name, "normal", true, iso)
  local recipients = '{"to":' .. cjson.encode({target.name}) .. ',"cc":[],"bcc":[]}'
  redis.call("HSET", pkey(prefix, "msg:" .. id), "head", intro, "sender", s.ident, "recipients", recipients,
    "created_us", us)
  redis.call("HSET", pkey(prefix, "bodies"), id, body)
  deliver_to(delivery_context(prefix, id, intro, us, "normal", "", body, ARGV[13], ARGV[2], ARGV[3]), t_lower, "to")
  if s.same then
    redis.call("XADD", pkey(prefix, "outbox:" .. s.lower), "*", "m", id, "c", us)
    redis.call("HSET", KEYS[3], s.name, iso)
  end
  if mark_pending(KEYS[4], ms, "msg:" .. id) == 1 then schedule = 1 end
end
return {"ok", cjson.encode(link), intro, schedule}
