-- cold_unread_take: take counts off agents' unread:<name> in the project's cold hash, never
-- below 0 (purge_old_messages deleting trimmed messages they had not read).
-- KEYS[1]  the project's cold hash
-- ARGV[1..] pairs: lower agent name, how many to take off
-- Returns {"ok"}.
local cold = KEYS[1]
for i = 1, #ARGV, 2 do
  local field = "unread:" .. ARGV[i]
  local left = tonumber(redis.call("HGET", cold, field) or "0") - tonumber(ARGV[i + 1])
  if left > 0 then
    redis.call("HSET", cold, field, left)
  else
    redis.call("HDEL", cold, field)
  end
end
return {"ok"}
