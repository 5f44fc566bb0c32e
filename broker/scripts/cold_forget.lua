-- cold_forget: keep the project's cold hash (docs/data-model.md, "The hot window") true when
-- messages the hot-window trimmer moved out of Redis leave the index too: purge_old_messages
-- and hard_delete_agent lower the unread counts of the recipients who had not read them, and a
-- deleted agent's own marks and count go. A count never goes below 0; one that reaches 0 goes.
-- KEYS[1]  cold hash
-- ARGV[1]  lower-cased name of an agent whose in:, out: and unread: fields all go, "" for none
-- ARGV[2..] pairs: lower-cased agent name, number of its unread messages deleted
-- Returns the number of fields changed.
local changed = 0
if ARGV[1] ~= "" then
  changed = redis.call("HDEL", KEYS[1], "in:" .. ARGV[1], "out:" .. ARGV[1], "unread:" .. ARGV[1])
end
for i = 2, #ARGV, 2 do
  local field = "unread:" .. ARGV[i]
  local count = tonumber(redis.call("HGET", KEYS[1], field) or "0")
  if count > 0 then
    local left = count - tonumber(ARGV[i + 1])
    if left > 0 then redis.call("HSET", KEYS[1], field, left) else redis.call("HDEL", KEYS[1], field) end
    changed = changed + 1
  end
end
return changed
