-- restore_reservation: put back one file reservation read from the SQLite index (used by
-- `broker rehydrate` after Redis lost its data), exactly as reserve.lua stored it: a live one
-- with its index entries, an ended one (released, or expired) as the record and res:all entry
-- release_reservations.lua / res_prune leave for its retention (res:ended says until when).
-- A reservation already in Redis is left alone. Nothing is added to pending: it is persisted.
-- KEYS[1]  the reservation's record (res:<id>): it routes the call to the project's slot (the
--          other keys are built from the prefix and share its hash tag)
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  id
-- ARGV[3]  agent name
-- ARGV[4]  normalised pattern
-- ARGV[5]  exclusive "1" or "0"
-- ARGV[6]  reason
-- ARGV[7]  created_us
-- ARGV[8]  expires_us
-- ARGV[9]  bucket (see lib/reservations.lua)
-- ARGV[10] "" for a live reservation; for an ended one, the microsecond from which it may be
--          forgotten (its end + retention: its res:ended score, as res_retire gives it)
-- ARGV[11] released_us of an ended one ("" if it expired unreleased)
-- Returns 1 if restored, 0 if it was already there.
-- @include lib/common.lua
-- @include lib/reservations.lua
local prefix, id, agent, pattern = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local record_key = KEYS[1]
if redis.call("EXISTS", record_key) == 1 then return 0 end
local member = res_member(ARGV[9], id, agent, ARGV[5], pattern)
redis.call("HSET", record_key, "id", id, "agent", agent, "path_pattern", pattern, "exclusive", ARGV[5],
  "reason", ARGV[6], "created_us", ARGV[7], "expires_us", ARGV[8], "released_us", ARGV[11] or "", "member", member)
redis.call("ZADD", pkey(prefix, "res:all"), ARGV[7], id)
if ARGV[10] ~= "" then
  redis.call("ZADD", pkey(prefix, "res:ended"), ARGV[10], id)
  return 1
end
redis.call("ZADD", pkey(prefix, "res:index"), 0, member)
redis.call("HINCRBY", pkey(prefix, "res:buckets"), ARGV[9], 1)
redis.call("ZADD", pkey(prefix, "res:expiry"), ARGV[8], id)
redis.call("HSET", pkey(prefix, "res:agent:" .. string.lower(agent)), pattern, id)
return 1
