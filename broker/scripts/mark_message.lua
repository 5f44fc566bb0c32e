-- mark_message: set a recipient's read (and for "ack", acknowledged) timestamp, once.
-- Later calls return the original timestamps. A sender with no recipient entry gets "". A change
-- is announced on the project's doorbell channel. A message restored from the index
-- (restore_message.lua: its hash has "cold") is counted in the cold hash's unread:<name> while
-- unread, not in the unread set: its first read takes one off that count.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  message id
-- ARGV[6]  "read" or "ack"
-- ARGV[7]  the project's doorbell shard channel (SPUBLISH)
-- ARGV[8]  the change event published there when a timestamp is set (broker/store/doorbell.py
--          change_event: the web view shows it at once; agents' waiters ignore it)
-- Returns {"ok", read_ts or "", ack_ts or "", "1" if the agent is a recipient else "0",
-- 1 if a persistence job must be enqueued (see mark_pending) else 0},
-- or {"NO_MESSAGE"} when the message does not exist or is not visible to the agent.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix, id, name = ARGV[1], ARGV[5], string.lower(agent.name)
local msg_key = pkey(prefix, "msg:" .. id)
local state = redis.call("HMGET", msg_key, "sender", "rk:" .. name, "rt:" .. name, "at:" .. name, "cold")
if not state[2] then
  if state[1] == name then return {"ok", "", "", "0", 0} end
  return {"NO_MESSAGE"}
end
local read_ts, ack_ts = state[3], state[4]
local changed = false
local iso, _, ms = now()
if not read_ts then
  read_ts = iso
  redis.call("HSET", msg_key, "rt:" .. name, iso)
  if state[5] then
    local cold = pkey(prefix, "cold")
    if tonumber(redis.call("HGET", cold, "unread:" .. name) or "0") > 0 then
      redis.call("HINCRBY", cold, "unread:" .. name, -1)
    end
  else
    redis.call("SREM", pkey(prefix, "unread:" .. name), id)
  end
  changed = true
end
if ARGV[6] == "ack" and not ack_ts then
  ack_ts = iso
  redis.call("HSET", msg_key, "at:" .. name, iso)
  changed = true
end
local schedule = 0
if changed then
  schedule = mark_pending(KEYS[3], ms, "rcpt:" .. id .. ":" .. name)
  redis.call("HSET", pkey(prefix, "mailact"), name, ms)  -- recent mail activity keeps reservations
  redis.call("SPUBLISH", ARGV[7], ARGV[8])
end
return {"ok", read_ts, ack_ts or "", "1", schedule}
