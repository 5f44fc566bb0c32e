-- record_activity: a sender's activity in its own project when its mail went only to other
-- projects (send_message.lua records it for mail delivered in the sender's project; the other
-- projects' scripts cannot reach this slot). The index records every send as its sender's
-- activity, so without this Redis showed an older time than the index. Moves forward only.
-- KEYS[1]  active hash (name -> last_active_ts)
-- KEYS[2]  agents hash
-- ARGV[1]  agent name as stored
-- ARGV[2]  the send's time: the message's created_ts (ISO-8601, the broker's own form, so
--          strings compare as times)
-- Returns 1 when recorded, 0 when the stored time is as new or the agent is gone.
if redis.call("HEXISTS", KEYS[2], string.lower(ARGV[1])) == 0 then return 0 end
local current = redis.call("HGET", KEYS[1], ARGV[1])
if current and current >= ARGV[2] then return 0 end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
return 1
