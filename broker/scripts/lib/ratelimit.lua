-- Per-agent token bucket (docs/limits.md), run inside the scripts that act for an agent so it
-- costs no extra round trip. State: pkey(prefix, "rate:" .. lower name), a string
-- "<tokens> <ms>" (tokens as of that Redis time), expiring once it would be full again.
-- spec (from Python, broker/identity/limits.py): "<tokens per second>:<burst>"; "" or a rate of 0 is
-- no limit. A call is admitted while the bucket holds a whole token; it then pays its cost,
-- which may leave the bucket in debt (a costly reservation pays for its matching work after it
-- is known), so the next calls wait until the debt is refilled.

-- The bucket of `key` at `ms` (Redis time, milliseconds), or nil when the spec disables it.
local function rate_open(key, spec, ms)
  if spec == nil or spec == "" then return nil end
  local colon = string.find(spec, ":", 1, true)
  local rate, burst = tonumber(string.sub(spec, 1, colon - 1)), tonumber(string.sub(spec, colon + 1))
  if rate <= 0 or burst <= 0 then return nil end
  local now_ms = tonumber(ms)
  local tokens = burst
  local state = redis.call("GET", key)
  if state then
    local space = string.find(state, " ", 1, true)
    local held, at = tonumber(string.sub(state, 1, space - 1)), tonumber(string.sub(state, space + 1))
    tokens = math.min(burst, held + math.max(0, now_ms - at) * rate / 1000)
  end
  return {key = key, rate = rate, burst = burst, tokens = tokens, ms = now_ms}
end

-- Milliseconds until the bucket admits a call, or nil if it admits one now.
local function rate_wait(bucket)
  if bucket == nil or bucket.tokens >= 1 then return nil end
  return math.ceil((1 - bucket.tokens) * 1000 / bucket.rate)
end

-- Take `cost` tokens (debt bounded by one burst) and store the bucket until it is full again.
local function rate_pay(bucket, cost)
  if bucket == nil then return end
  local tokens = math.max(bucket.tokens - cost, -bucket.burst)
  local refill_ms = math.ceil((bucket.burst - tokens) * 1000 / bucket.rate) + 1000
  redis.call("SET", bucket.key, string.format("%.3f %d", tokens, bucket.ms), "PX", refill_ms)
end
