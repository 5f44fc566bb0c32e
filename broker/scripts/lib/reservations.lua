-- Reservation helpers shared by the reservation scripts. Data model (per project prefix):
--   res:<id>            HASH id, agent, path_pattern, exclusive "1"/"0", reason, created_us,
--                       expires_us, released_us ("" while held), member (its index entry)
--   res:index           ZSET, all scores 0, ordered by member text: one entry per live
--                       reservation, "<bucket>\0<id>\0<agent>\0<x|s>\0<pattern>" (no expiry, so
--                       a renewal leaves it alone; the expiry is the score in res:expiry).
--                       bucket = the pattern's leading wildcard-free segments ("" when it starts
--                       with a wildcard; "\1<name>" for tool:// and friends), so a request only
--                       reads the buckets its own prefix can meet (ZRANGEBYLEX), never them all.
--   res:buckets         HASH bucket -> number of index entries in it, so a request range-reads
--                       only buckets that exist (one HMGET for all its prefixes)
--   res:expiry          ZSET id by expires_us of live reservations (pruning and listings)
--   res:all             ZSET id by created_us of every reservation still retained
--   res:ended           ZSET id by the microsecond from which an ended reservation may be forgotten
--                       (its end, release or expiry, + FILE_RESERVATION_RETENTION_SECONDS); res_gc forgets it then,
--                       once persisted, so ended reservations do not pile up in res:all
--   res:agent:<lower>   HASH pattern -> id of the agent's live reservations (renew in place)
-- A reservation counts while released_us == "" and now < expires_us: every script compares
-- expiry with its own TIME, so an expired entry stops counting at its instant even before it
-- is pruned (no sweeper race).
-- @include lib/common.lua

local RES_SEP = "\0"

local function res_member(bucket, id, agent, exclusive, pattern)
  local kind = exclusive == "1" and "x" or "s"
  return table.concat({bucket, id, agent, kind, pattern}, RES_SEP)
end

-- id, agent, exclusive ("1"/"0"), pattern of an index member.
local function res_parse(member)
  local fields, start = {}, 1
  for _ = 1, 4 do
    local stop = string.find(member, RES_SEP, start, true)
    fields[#fields + 1] = string.sub(member, start, stop - 1)
    start = stop + 1
  end
  return fields[2], fields[3], fields[4] == "x" and "1" or "0", string.sub(member, start)
end

-- Take a reservation out of the live structures (index, expiry, agent map); the record stays
-- at least `retention` seconds (res:ended) so listings and the persistence worker can read it.
local function res_retire(prefix, id, record_key, retention)
  local fields = redis.call("HMGET", record_key, "member", "agent", "path_pattern", "released_us", "expires_us")
  if fields[1] and redis.call("ZREM", pkey(prefix, "res:index"), fields[1]) == 1 then
    local bucket = string.sub(fields[1], 1, string.find(fields[1], RES_SEP, 1, true) - 1)
    if redis.call("HINCRBY", pkey(prefix, "res:buckets"), bucket, -1) <= 0 then
      redis.call("HDEL", pkey(prefix, "res:buckets"), bucket)
    end
  end
  redis.call("ZREM", pkey(prefix, "res:expiry"), id)
  if fields[2] then
    local map = pkey(prefix, "res:agent:" .. string.lower(fields[2]))
    if redis.call("HGET", map, fields[3]) == id then redis.call("HDEL", map, fields[3]) end
  end
  -- retention counts from its end (release, else expiry), which the index keeps too, so a
  -- rehydrated record gets the same score
  local ended_us = tonumber(fields[4] ~= "" and fields[4] or fields[5])
  if not ended_us then
    local t = redis.call("TIME")
    ended_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  local forget_us = ended_us + tonumber(retention) * 1000000
  redis.call("ZADD", pkey(prefix, "res:ended"), string.format("%d", forget_us), id)
end

-- Forget at most `limit` ended reservations past their retention (record, res:all, res:ended),
-- skipping those the persistence worker has not stored yet (still in pending, in flight or
-- dead-lettered: the worker reads the record, also when a dead letter is retried). Bounded
-- work; callers run it on every reserve and release.
local function res_gc(prefix, now_us, limit)
  local ended = pkey(prefix, "res:ended")
  local pending, inflight = pkey(prefix, "pending"), pkey(prefix, "pending:inflight")
  local dead = pkey(prefix, "deadletter")
  local forgotten = 0
  for _, id in ipairs(redis.call("ZRANGEBYSCORE", ended, "-inf", now_us, "LIMIT", 0, limit)) do
    local member = "res:" .. id
    if not redis.call("ZSCORE", pending, member) and not redis.call("ZSCORE", inflight, member)
      and not redis.call("ZSCORE", dead, member) then
      redis.call("DEL", pkey(prefix, "res:" .. id))
      redis.call("ZREM", pkey(prefix, "res:all"), id)
      redis.call("ZREM", ended, id)
      forgotten = forgotten + 1
    end
  end
  return forgotten
end

-- Retire at most `limit` reservations whose expiry has passed, and forget at most `limit`
-- ended ones past their retention (bounded work per call).
local function res_prune(prefix, now_us, retention, limit)
  local due = redis.call("ZRANGEBYSCORE", pkey(prefix, "res:expiry"), "-inf", now_us, "LIMIT", 0, limit)
  for _, id in ipairs(due) do
    res_retire(prefix, id, pkey(prefix, "res:" .. id), retention)
  end
  res_gc(prefix, now_us, limit)
end

-- The agent's live reservation ids, filtered by mode "all", "paths" (exact patterns) or "ids".
local function res_select(prefix, lower, now_us, mode, items)
  local map = redis.call("HGETALL", pkey(prefix, "res:agent:" .. lower))
  local wanted = {}
  for _, item in ipairs(items) do wanted[item] = true end
  local chosen = {}
  for k = 1, #map, 2 do
    local pattern, id = map[k], map[k + 1]
    if mode == "all" or (mode == "paths" and wanted[pattern]) or (mode == "ids" and wanted[id]) then
      local state = redis.call("HMGET", pkey(prefix, "res:" .. id), "expires_us", "released_us")
      if state[1] and state[2] == "" and tonumber(state[1]) > now_us then
        chosen[#chosen + 1] = id
      end
    end
  end
  table.sort(chosen, function(a, b) return tonumber(a) < tonumber(b) end)
  return chosen
end
