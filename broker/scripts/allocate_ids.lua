-- allocate_ids: reserve a block of ids on a counter that never goes back behind the clock.
-- The counter is first raised to (Redis time in ms - ARGV[2]) * ARGV[3], then by the block,
-- so a counter that Redis lost its last writes of (host crash under AOF everysec, failover to
-- a replica that lagged) still hands out ids past every lost one: they were all allocated
-- before the loss, below that floor (docs/durability-ids.md gives the bound).
-- KEYS[1]  id counter (<p>:ids:<kind>)
-- ARGV[1]  block size
-- ARGV[2]  epoch, ms since 1970 (the floor is 0 then)
-- ARGV[3]  ids per ms the floor advances by
-- ARGV[4]  ids stay below this (Lua's cjson prints numbers with 14 significant digits)
-- Returns the block's last id (the block is [returned - ARGV[1] + 1, returned]), or an error
-- reply "ID_SPACE" when the block would reach ARGV[4].
local t = redis.call("TIME")
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local floor = (now_ms - tonumber(ARGV[2])) * tonumber(ARGV[3])
local current = tonumber(redis.call("GET", KEYS[1]) or "0")
if current < floor then current = floor end
local top = current + tonumber(ARGV[1])
if top >= tonumber(ARGV[4]) then return redis.error_reply("ID_SPACE") end
local text = string.format("%.0f", top)
redis.call("SET", KEYS[1], text)
return top
