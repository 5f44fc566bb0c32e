-- drain_requeue: return in-flight entries claimed at or before a cutoff to the pending set,
-- because the drain that claimed them died (worker killed) or outlived its time limit.
-- Writing them again is safe: every write of the drain is idempotent.
-- KEYS[1]  in-flight zset
-- KEYS[2]  pending-persistence zset
-- ARGV[1]  cutoff: claim time in ms; entries claimed at or before it are returned
-- ARGV[2]  most entries to move in this call
-- Returns the number of entries moved.
local members = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "WITHSCORES", "LIMIT", 0, tonumber(ARGV[2]))
for i = 1, #members, 2 do
  -- NX: an entry changed again meanwhile is already pending with its newer score
  redis.call("ZADD", KEYS[2], "NX", members[i + 1], members[i])
  redis.call("ZREM", KEYS[1], members[i])
end
return #members / 2
