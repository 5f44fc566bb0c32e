-- drain_claim: claim the oldest pending-persistence entries of a project for one drain batch.
-- Moves them from the pending set to the in-flight set (scored by claim time), so a change
-- made while the batch is written re-enters pending and is written again by a later batch,
-- and a batch lost with its worker stays visible in in-flight for the reconciler.
-- The first claim of a drain deletes the "drain job scheduled" flag: any write after it sets
-- the flag again and enqueues a job, and every write before it is in pending now, so nothing
-- waits unscheduled. Later claims of the same drain leave the flag: the job that the first
-- write after the first claim enqueued runs after them anyway, and deleting it at every claim
-- enqueued a job per batch under steady writes, while each job ran several batches: the
-- queue grew without bound.
-- KEYS[1]  pending-persistence zset
-- KEYS[2]  in-flight zset
-- KEYS[3]  "drain job scheduled" flag
-- ARGV[1]  most entries to claim
-- ARGV[2]  "1" on the drain's first claim (delete the flag), "0" on later ones
-- Claims only entries scored up to now: an entry whose write failed waits in pending, scored
-- by the time of its next try (drain_fail.lua), so it cannot hold back the rest.
-- Returns the claimed members, oldest first, each followed by its pending score (so a batch
-- given back unwritten returns as old as it was: the oldest-pending age health reports), as a
-- flat list {member, score, ...} (empty when nothing is due).
-- @include lib/common.lua
if ARGV[2] == "1" then redis.call("DEL", KEYS[3]) end
local _, _, ms = now()
local scored = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ms, "WITHSCORES", "LIMIT", 0, tonumber(ARGV[1]))
if #scored == 0 then return {} end
local members = {}
for i = 1, #scored, 2 do members[#members + 1] = scored[i] end
for i = 1, #members, 500 do
  local chunk = {}
  local args = {}
  for j = i, math.min(i + 499, #members) do
    table.insert(chunk, members[j])
    table.insert(args, ms)
    table.insert(args, members[j])
  end
  redis.call("ZADD", KEYS[2], unpack(args))
  redis.call("ZREM", KEYS[1], unpack(chunk))
end
return scored
