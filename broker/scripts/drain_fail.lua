-- drain_fail: count a failed try for entries whose write failed on their own (the drain
-- isolated them from the rest of their batch), and either put each back in pending, scored by
-- the time of its next try (exponential back-off), or, at the last allowed try, move it to the
-- project's dead-letter set, where it stays until `broker dead-letters retry` returns it.
-- KEYS[1]  in-flight zset
-- KEYS[2]  pending-persistence zset
-- KEYS[3]  attempts hash (member -> failed tries)
-- KEYS[4]  dead-letter zset (member -> ms when dead-lettered)
-- KEYS[5]  dead-letter info hash (member -> JSON {attempts, error, dead_at})
-- ARGV[1]  tries allowed before an entry is dead-lettered
-- ARGV[2]  back-off after the first failed try, in ms (doubles with each try)
-- ARGV[3]  longest back-off, in ms
-- ARGV[4..] pairs: member, error text of its last try
-- Returns the members dead-lettered by this call.
-- @include lib/common.lua
local max_attempts = tonumber(ARGV[1])
local base, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local iso, _, ms = now()
local dead = {}
for i = 4, #ARGV, 2 do
  local member, err = ARGV[i], ARGV[i + 1]
  local tries = redis.call("HINCRBY", KEYS[3], member, 1)
  redis.call("ZREM", KEYS[1], member)
  if tries >= max_attempts then
    -- a newer change of the entry waiting in pending would fail the same way: park it too
    redis.call("ZREM", KEYS[2], member)
    redis.call("HDEL", KEYS[3], member)
    redis.call("ZADD", KEYS[4], ms, member)
    redis.call("HSET", KEYS[5], member,
      cjson.encode({attempts = tries, error = err, dead_at = iso}))
    table.insert(dead, member)
  else
    local delay = math.min(base * 2 ^ (tries - 1), cap)
    -- NX: a newer change already pending keeps its own (earlier) score
    redis.call("ZADD", KEYS[2], "NX", string.format("%d", tonumber(ms) + delay), member)
  end
end
return dead
