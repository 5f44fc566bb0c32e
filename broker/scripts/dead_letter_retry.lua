-- dead_letter_retry: give dead-lettered entries of a project a fresh start: back to pending
-- (due now) with their try count reset, so the next drain writes them. The caller enqueues
-- that drain.
-- KEYS[1]  dead-letter zset
-- KEYS[2]  dead-letter info hash
-- KEYS[3]  pending-persistence zset
-- KEYS[4]  attempts hash
-- ARGV[1]  most entries to move in this call
-- ARGV[2..] members to move (none: the oldest ARGV[1] dead letters)
-- Returns the members moved (members named but not dead-lettered are skipped).
-- @include lib/common.lua
local members = {}
if #ARGV > 1 then
  for i = 2, math.min(#ARGV, tonumber(ARGV[1]) + 1) do
    if redis.call("ZSCORE", KEYS[1], ARGV[i]) then table.insert(members, ARGV[i]) end
  end
else
  members = redis.call("ZRANGE", KEYS[1], 0, tonumber(ARGV[1]) - 1)
end
local _, _, ms = now()
for _, member in ipairs(members) do
  redis.call("ZREM", KEYS[1], member)
  redis.call("HDEL", KEYS[2], member)
  redis.call("HDEL", KEYS[4], member)
  redis.call("ZADD", KEYS[3], ms, member)
end
return members
