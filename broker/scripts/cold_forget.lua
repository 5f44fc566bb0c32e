-- cold_forget: take purged messages out of the project's cold unread counts (purge_old_messages
-- deleted from the index messages the hot-window trimmer had already moved out of Redis while
-- their recipient had not read them: docs/data-model.md, "The hot window"). A count never goes
-- below 0; a field that reaches 0 goes.
-- KEYS[1]  cold hash
-- ARGV[1..] pairs: lower-cased agent name, number of its unread messages purged
-- Returns the number of fields changed.
local changed = 0
for i = 1, #ARGV, 2 do
  local field = "unread:" .. ARGV[i]
  local count = tonumber(redis.call("HGET", KEYS[1], field) or "0")
  if count > 0 then
    local left = count - tonumber(ARGV[i + 1])
    if left > 0 then redis.call("HSET", KEYS[1], field, left) else redis.call("HDEL", KEYS[1], field) end
    changed = changed + 1
  end
end
return changed
