-- reserve: grant file reservations and report conflicts, atomically (advisory: every path is
-- granted; conflicts name the other agents' live reservations that overlap it). The same
-- agent asking again for an identical pattern renews that reservation in place (same id).
-- Two shared reservations never conflict; tool:// resource:// service:// names meet only an
-- equal name. Overlap is exact (lib/globs.lua).
-- Bounded work (docs/limits.md): the agent's token bucket (lib/ratelimit.lua) admits the call
-- first; then the index entries it would read are counted (ZLEXCOUNT) and the pairs it would
-- compare are priced (pair_steps) before any matching, and a call over the step budget is
-- refused then; the matcher's own count stops it too (a backstop). Nothing is written on a
-- refusal but the bucket, which pays for the work done. A grant publishes a change event on the
-- project's doorbell channel (the web view's live board).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  ttl in microseconds
-- ARGV[6]  exclusive "1" or "0"
-- ARGV[7]  reason
-- ARGV[8]  seconds to keep a record after it ends
-- ARGV[9]  most holders to list per path
-- ARGV[10] step budget of this call (broker/reservations/service.py STEP_BUDGET)
-- ARGV[11] rate-limit spec "<per second>:<burst>", "" for none (lib/ratelimit.lua)
-- ARGV[12] the project's doorbell shard channel (SPUBLISH)
-- ARGV[13] the change event published there on a grant (broker/store/doorbell.py change_event)
-- ARGV[14..] triples: new id, normalised pattern, bucket (see lib/reservations.lua)
-- Returns {"ok", granted JSON, conflicts JSON, steps of work done (the HTTP client's bucket pays
-- for them too, broker/mcp/limits.py), 1 if a persistence drain must be enqueued else 0}
-- (times as expires_us strings, which the caller formats),
-- {"TOO_COMPLEX", what ("entries" read, "pairs" priced, "matching" done), count, steps}
-- (nothing written), {"RATE_LIMITED", milliseconds to wait} (nothing written),
-- {"PROJECT_ARCHIVED", human_key} (nothing written), or an error table from resolve_agent.
-- @include lib/common.lua
-- @include lib/globs.lua
-- @include lib/ratelimit.lua
-- @include lib/reservations.lua
local FIRST = 14  -- the first triple
-- Steps (about 0.15 us each, one matcher table cell) charged per index entry read and per
-- pair compared besides its cells, and the steps one token of the agent's bucket pays for.
local READ_STEPS, PAIR_STEPS, STEPS_PER_TOKEN = 8, 32, 1000
local archived = redis.call("HMGET", KEYS[1], "archived_at", "human_key")
if archived[1] then return {"PROJECT_ARCHIVED", archived[2]} end
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local prefix, lower = ARGV[1], string.lower(agent.name)
local iso, now_us, ms = now()
local now_num = tonumber(now_us)
local ttl, exclusive, reason, retention = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local max_holders, budget = tonumber(ARGV[9]), tonumber(ARGV[10])
local bucket_state = rate_open(pkey(prefix, "rate:" .. lower), ARGV[11], ms)
local wait = rate_wait(bucket_state)
if wait then return {"RATE_LIMITED", wait} end

local index = pkey(prefix, "res:index")
local map = pkey(prefix, "res:agent:" .. lower)
local compiled = {}

-- The bucket prefixes of a request: "", then each leading run of its segments.
local prefix_cache = {}
local function bucket_prefixes(bucket)
  local cached = prefix_cache[bucket]
  if cached then return cached end
  if string.byte(bucket, 1) == 1 then prefix_cache[bucket] = {bucket}; return prefix_cache[bucket] end
  local prefixes, at = {""}, 1
  while bucket ~= "" do
    local slash = string.find(bucket, "/", at, true)
    prefixes[#prefixes + 1] = slash and string.sub(bucket, 1, slash - 1) or bucket
    if not slash then break end
    at = slash + 1
  end
  prefix_cache[bucket] = prefixes
  return prefixes
end

-- Which buckets hold entries, for every prefix of every requested path, in one HMGET.
local bucket_count = {}
do
  local wanted, seen = {}, {}
  for k = FIRST + 2, #ARGV, 3 do
    for _, q in ipairs(bucket_prefixes(ARGV[k])) do
      if not seen[q] then seen[q] = true; wanted[#wanted + 1] = q end
    end
  end
  local counts = redis.call("HMGET", pkey(prefix, "res:buckets"), unpack(wanted))
  for i, q in ipairs(wanted) do bucket_count[q] = counts[i] end
end

-- Index ranges that can hold a reservation meeting a request with this bucket: the buckets
-- of its prefixes that exist, and the buckets that extend it.
local function candidate_ranges(bucket, literal)
  local ranges = {}
  for _, q in ipairs(bucket_prefixes(bucket)) do
    if bucket_count[q] then ranges[#ranges + 1] = {"[" .. q .. RES_SEP, "(" .. q .. "\1"} end
  end
  if string.byte(bucket, 1) == 1 then return ranges end
  if bucket == "" then
    ranges[#ranges + 1] = {"[\2", "+"}
  elseif not literal then
    -- a longer bucket means every path its pattern matches is longer than a literal request
    ranges[#ranges + 1] = {"[" .. bucket .. "/", "(" .. bucket .. "0"}
  end
  return ranges
end

-- Work done so far besides the matcher's cells (glob_steps), in steps; a refusal pays too.
local spent = 0
local function refuse(what, count)
  rate_pay(bucket_state, 1 + math.floor((spent + glob_steps) / STEPS_PER_TOKEN))
  return {"TOO_COMPLEX", what, count, spent + glob_steps}
end

-- How many index entries the requests would read, counted before reading any (O(log n) each).
local ranges_of, entries = {}, 0
for k = FIRST, #ARGV, 3 do
  local ranges = candidate_ranges(ARGV[k + 2], ARGV[k + 2] == ARGV[k + 1])
  ranges_of[k] = ranges
  for _, range in ipairs(ranges) do
    entries = entries + redis.call("ZLEXCOUNT", index, range[1], range[2])
  end
end
if entries * READ_STEPS > budget then spent = entries * READ_STEPS; return refuse("entries", entries) end
spent = entries * READ_STEPS

-- Other agents' live entries that could conflict with each request, and what comparing them
-- costs (an upper bound), before any matching.
local weights, compared, candidates_of, priced = {}, 0, {}, 0
for k = FIRST, #ARGV, 3 do
  local pattern = ARGV[k + 1]
  local candidates, ids = {}, {}
  for _, range in ipairs(ranges_of[k]) do
    for _, member in ipairs(redis.call("ZRANGEBYLEX", index, range[1], range[2])) do
      local id, holder, held_exclusive, held = res_parse(member)
      if string.lower(holder) ~= lower and (held_exclusive == "1" or exclusive == "1") then
        candidates[#candidates + 1] = {id, holder, held_exclusive, held}
        ids[#ids + 1] = id
      end
    end
  end
  local live = {}
  if #ids > 0 then
    local expiries = redis.call("ZMSCORE", pkey(prefix, "res:expiry"), unpack(ids))
    for i, c in ipairs(candidates) do
      local expires = tonumber(expiries[i])
      if expires and expires > now_num then
        c[5] = expires
        live[#live + 1] = c
        spent = spent + PAIR_STEPS
        priced = priced + pair_steps(c[4], pattern, weights)
      end
    end
  end
  compared = compared + #live
  candidates_of[k] = live
end
if spent + priced > budget then
  local refusal = refuse("pairs", compared)
  refusal[4] = spent + priced
  return refusal
end

local function holders_of(pattern, live)
  local holders, more = {}, false
  for _, c in ipairs(live) do
    if patterns_overlap(c[4], pattern, compiled) then
      if #holders >= max_holders then more = true; break end
      holders[#holders + 1] = {id = tonumber(c[1]), agent = c[2], path_pattern = c[4],
        exclusive = c[3] == "1", expires_us = string.format("%.0f", c[5])}
    end
    if spent + glob_steps > budget then return holders, more end
  end
  return holders, more
end

-- Every conflict first, before any write, so a call over the work budget changes nothing.
local found = {}
for k = FIRST, #ARGV, 3 do
  local holders, more = holders_of(ARGV[k + 1], candidates_of[k])
  if spent + glob_steps > budget then return refuse("matching", compared) end
  found[k] = {holders, more}
end
res_prune(prefix, now_us, retention, 64)

local granted, conflicts = {}, {}
-- writes to the shared zsets are batched: one command each for the whole call
local index_old, index_new, expiry_new, pending_new = {}, {}, {}, {}
-- the agent's existing reservation ids for every requested pattern, in one read
local held_ids
do
  local patterns = {}
  for k = FIRST + 1, #ARGV, 3 do patterns[#patterns + 1] = ARGV[k] end
  held_ids = redis.call("HMGET", map, unpack(patterns))
end
for k = FIRST, #ARGV, 3 do
  local new_id, pattern, bucket = ARGV[k], ARGV[k + 1], ARGV[k + 2]
  local holders, more = found[k][1], found[k][2]
  if #holders > 0 then
    conflicts[#conflicts + 1] = {path = pattern, holders = holders, more_holders = more}
  end
  local expires = now_num + ttl
  local id = held_ids[(k - FIRST) / 3 + 1]
  local record_key = id and pkey(prefix, "res:" .. id)
  local existing = id and redis.call("HMGET", record_key, "expires_us", "released_us", "member", "reason")
  local old_member
  if existing and existing[1] and existing[2] == "" and tonumber(existing[1]) > now_num then
    -- renew in place: exclusivity from this call, reason unless this one is empty
    if tonumber(existing[1]) > expires then expires = tonumber(existing[1]) end
    if reason ~= "" or existing[4] == nil then existing[4] = reason end
    old_member = existing[3]
  else
    id = new_id
    record_key = pkey(prefix, "res:" .. id)
    existing = {nil, nil, nil, reason}
    redis.call("HSET", record_key, "id", id, "agent", agent.name, "path_pattern", pattern,
      "created_us", now_us, "released_us", "")
    redis.call("ZADD", pkey(prefix, "res:all"), now_us, id)
    redis.call("HSET", map, pattern, id)
    redis.call("HINCRBY", pkey(prefix, "res:buckets"), bucket, 1)
  end
  local expires_us = string.format("%.0f", expires)
  local member = res_member(bucket, id, agent.name, exclusive, pattern)
  redis.call("HSET", record_key, "exclusive", exclusive, "reason", existing[4], "expires_us", expires_us,
    "member", member)
  if member ~= old_member then  -- new, or its exclusivity changed: the index entry changes
    if old_member then index_old[#index_old + 1] = old_member end
    index_new[#index_new + 1] = 0
    index_new[#index_new + 1] = member
  end
  expiry_new[#expiry_new + 1] = expires_us
  expiry_new[#expiry_new + 1] = id
  pending_new[#pending_new + 1] = "res:" .. id
  granted[#granted + 1] = {id = tonumber(id), path_pattern = pattern, exclusive = exclusive == "1",
    reason = existing[4], expires_us = expires_us}
end
if #index_old > 0 then redis.call("ZREM", index, unpack(index_old)) end
if #index_new > 0 then redis.call("ZADD", index, unpack(index_new)) end
redis.call("ZADD", pkey(prefix, "res:expiry"), unpack(expiry_new))
local schedule = mark_pending_all(KEYS[3], ms, pending_new)
rate_pay(bucket_state, 1 + math.floor((spent + glob_steps) / STEPS_PER_TOKEN))
if #granted > 0 then redis.call("SPUBLISH", ARGV[12], ARGV[13]) end
return {"ok", cjson.encode(granted), cjson.encode(conflicts), spent + glob_steps, schedule}
