-- raise_counter: raise an id counter to at least a value, atomically (never lowers it, so a
-- broker allocating ids while `broker rehydrate` runs cannot be moved backwards).
-- KEYS[1]  id counter (<p>:ids:<kind>)
-- ARGV[1]  the smallest value the counter may have afterwards
-- Returns the counter's value afterwards.
local current = tonumber(redis.call("GET", KEYS[1]) or "0")
local wanted = tonumber(ARGV[1])
if current < wanted then
  redis.call("SET", KEYS[1], ARGV[1])
  return wanted
end
return current
