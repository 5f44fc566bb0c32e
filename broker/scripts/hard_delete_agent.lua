-- hard_delete_agent: delete an agent and everything that is its own, one bounded phase per call
-- (the caller loops; every call is atomic and idempotent, and the agent record goes last, so an
-- interrupted delete is finished by calling again).
--   "sent"          up to ARGV[6] messages from the head of its outbox, deleted everywhere
--                   (lib/lifecycle.lua delete_message: hash, body, every recipient's inbox
--                   entry and indexes, thread index, pending entries)
--   "received"      up to ARGV[6] entries from the head of its inbox: its recipient fields leave
--                   the message (read/ack times, kind, the name in the recipients JSON), the
--                   entry and its topic index go; the message stays for the other recipients
--   "reservations"  one ZSCAN step (cursor ARGV[7], COUNT ARGV[6]) over res:all: its
--                   reservations, live or ended, leave every reservation structure
--   "contacts"      one HSCAN step (cursor ARGV[7], COUNT ARGV[6]) over its links: mail held
--                   for it, its pending link entries, and the other endpoint's copy when that
--                   agent is of this project (lib/contacts.lua forget_link); copies kept in
--                   other projects are returned for the caller (link_forget.lua there). Its
--                   own links hash stays until "final", so a retry finds them again.
--   "final"         {"MORE"} while its inbox or outbox is not empty (mail arrived meanwhile);
--                   else its live reservations, its window identities, and the agent itself:
--                   record, activity, mail activity, streams, indexes, links, hook cursor,
--                   rate-limit bucket, pending entry, its fields of the cold hash
-- "sent" and "received" also take it out of the participant sets (tpart:) of their threads.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  active hash
-- KEYS[4]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required ("0" also when the caller is the operator)
-- ARGV[5]  phase
-- ARGV[6]  batch size
-- ARGV[7]  ZSCAN / HSCAN cursor ("reservations", "contacts")
-- Returns {"ok", agent JSON, phase result JSON, more/cursor}:
--   sent: [{"head":..,"recipients":{to,cc,bcc}}...], "1" if more may remain else "0"
--   received: [message id...], "1"|"0"
--   reservations: [reservation id...], next cursor ("0" when done)
--   contacts: [{"slug", "owner", "field"}...] copies in other projects, next cursor
--   final: {"reservations":[id...],"windows":n}, "0"
-- or {"MORE"} (final only), or an error table from resolve_agent.
-- @include lib/common.lua
-- @include lib/contacts.lua
-- @include lib/lifecycle.lua
-- @include lib/reservations.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local raw = redis.call("HGET", KEYS[2], string.lower(agent.name))
local prefix, lower, phase, batch = ARGV[1], string.lower(agent.name), ARGV[5], tonumber(ARGV[6])
local inbox, outbox = pkey(prefix, "inbox:" .. lower), pkey(prefix, "outbox:" .. lower)

local function drop_reservation(id)
  local record_key = pkey(prefix, "res:" .. id)
  res_retire(prefix, id, record_key, 1)
  redis.call("DEL", record_key)
  redis.call("ZREM", pkey(prefix, "res:all"), id)
  redis.call("ZREM", pkey(prefix, "res:ended"), id)
  redis.call("ZREM", KEYS[4], "res:" .. id)
end

-- It no longer takes part in the thread of a message (head JSON) it sent or received.
local function leave_thread(head)
  local thread = json_text(cjson.decode(head).thread_id)
  if thread ~= "" then redis.call("SREM", pkey(prefix, "tpart:" .. thread), lower) end
end

if phase == "sent" then
  local entries = redis.call("XRANGE", outbox, "-", "+", "COUNT", batch)
  local items = {}
  for _, entry in ipairs(entries) do
    local gone = delete_message(prefix, KEYS[4], entry_fields(entry).m)
    if gone then
      items[#items + 1] = '{"head":' .. gone[1] .. ',"recipients":' .. gone[2] .. '}'
      leave_thread(gone[1])
    end
    redis.call("XDEL", outbox, entry[1])
  end
  return {"ok", raw, "[" .. table.concat(items, ",") .. "]", #entries == batch and "1" or "0"}
end

if phase == "received" then
  local entries = redis.call("XRANGE", inbox, "-", "+", "COUNT", batch)
  local ids = {}
  for _, entry in ipairs(entries) do
    local fields = entry_fields(entry)
    local id = fields.m
    ids[#ids + 1] = id
    local msg_key = pkey(prefix, "msg:" .. id)
    redis.call("HDEL", msg_key, "rk:" .. lower, "rt:" .. lower, "at:" .. lower)
    local head, recipients = unpack(redis.call("HMGET", msg_key, "head", "recipients"))
    if head then leave_thread(head) end
    if recipients then
      local lists = cjson.decode(recipients)
      local parts = {}
      for _, kind in ipairs({"to", "cc", "bcc"}) do
        local kept = {}
        for _, name in ipairs(type(lists[kind]) == "table" and lists[kind] or {}) do
          if string.lower(name) ~= lower then kept[#kept + 1] = name end
        end
        parts[#parts + 1] = '"' .. kind .. '":' .. jlist(kept)
      end
      redis.call("HSET", msg_key, "recipients", "{" .. table.concat(parts, ",") .. "}")
    end
    redis.call("ZREM", KEYS[4], "rcpt:" .. id .. ":" .. lower)
    local topic = string.match(fields.f or "", "^[^|]*|[^|]*|(.*)$")
    if topic and topic ~= "" then redis.call("DEL", pkey(prefix, "rtopic:" .. lower .. ":" .. topic)) end
    redis.call("XDEL", inbox, entry[1])
  end
  return {"ok", raw, jlist(ids), #entries == batch and "1" or "0"}
end

if phase == "reservations" then
  local step = redis.call("ZSCAN", pkey(prefix, "res:all"), ARGV[7], "COUNT", batch)
  local ids = {}
  for i = 1, #step[2], 2 do
    local id = step[2][i]
    local holder = redis.call("HGET", pkey(prefix, "res:" .. id), "agent")
    if holder and string.lower(holder) == lower then
      drop_reservation(id)
      ids[#ids + 1] = id
    end
  end
  return {"ok", raw, jlist(ids), step[1]}
end

if phase == "contacts" then
  local here = prefix_slug(prefix)
  local step = redis.call("HSCAN", pkey(prefix, "links:" .. lower), ARGV[7], "COUNT", batch)
  local foreign = {}
  for i = 1, #step[2], 2 do
    local field = step[2][i]
    local kind, slug, other = string.match(field, "^(%a+):(.*)#([^#]*)$")
    if kind == "in" then
      drop_held(prefix, pkey(prefix, "held:" .. lower .. ":" .. slug .. "#" .. other), lower, "0", false)
    end
    redis.call("ZREM", KEYS[4], "link:" .. lower .. "|" .. field)
    local mirror = (kind == "in" and "out:" or "in:") .. here .. "#" .. lower
    if slug == here then
      forget_link(prefix, KEYS[4], other, mirror, agent.id)
    elseif kind then
      foreign[#foreign + 1] = cjson.encode({slug = slug, owner = other, field = mirror})
    end
  end
  return {"ok", raw, "[" .. table.concat(foreign, ",") .. "]", step[1]}
end

-- final
if redis.call("XLEN", inbox) > 0 or redis.call("XLEN", outbox) > 0 then return {"MORE"} end
local map = pkey(prefix, "res:agent:" .. lower)
local live = redis.call("HVALS", map)
for _, id in ipairs(live) do drop_reservation(id) end
local windows, removed = pkey(prefix, "windows"), 0
local all = redis.call("HGETALL", windows)
for i = 1, #all, 2 do
  local window = cjson.decode(all[i + 1])
  if type(window.display_name) == "string" and string.lower(window.display_name) == lower then
    redis.call("HDEL", windows, all[i])
    removed = removed + 1
  end
end
redis.call("HDEL", KEYS[2], lower)
redis.call("HDEL", KEYS[3], agent.name)
redis.call("HDEL", pkey(prefix, "mailact"), lower)
redis.call("HDEL", pkey(prefix, "cold"), "in:" .. lower, "out:" .. lower, "unread:" .. lower)
redis.call("DEL", inbox, outbox, map, pkey(prefix, "unread:" .. lower), pkey(prefix, "urgent:" .. lower),
  pkey(prefix, "hookcursor:" .. lower), pkey(prefix, "links:" .. lower), pkey(prefix, "rate:" .. lower))
redis.call("ZREM", KEYS[4], "agent:" .. string.format("%d", agent.id))
return {"ok", raw, '{"reservations":' .. jlist(live) .. ',"windows":' .. removed .. '}', "0"}
