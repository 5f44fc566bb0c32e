-- force_release_reservation: end another agent's reservation that the caller has found stale,
-- only if it is still exactly as checked (same expiry, still live): a holder that renewed
-- in the meantime keeps it. A release is announced on the project's doorbell channel.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  actor name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  reservation id
-- ARGV[6]  the expires_us the caller checked
-- ARGV[7]  seconds to keep the record after it ends
-- ARGV[8]  the project's doorbell shard channel (SPUBLISH)
-- ARGV[9]  the change event published there on a release (broker/store/doorbell.py change_event)
-- Returns {"ok", released_at ISO, released_us, 1 if a drain must be enqueued else 0}, {"CHANGED"} when renewed or ended meanwhile,
-- or an error table from resolve_agent.
-- @include lib/common.lua
-- @include lib/reservations.lua
local _, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix, id = ARGV[1], ARGV[5]
local iso, now_us, ms = now()
local record_key = pkey(prefix, "res:" .. id)
local state = redis.call("HMGET", record_key, "expires_us", "released_us")
if state[1] ~= ARGV[6] or state[2] ~= "" then return {"CHANGED"} end
redis.call("HSET", record_key, "released_us", now_us)
res_retire(prefix, id, record_key, ARGV[7])
res_gc(prefix, now_us, 8)  -- forget a few ended reservations past their retention
redis.call("SPUBLISH", ARGV[8], ARGV[9])
return {"ok", iso, now_us, mark_pending(KEYS[3], ms, "res:" .. id)}
