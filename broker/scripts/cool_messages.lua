-- cool_messages: remove again from Redis the messages restore_message.lua put back for a write,
-- once that write is persisted (no msg:<id> or rcpt:<id>:<name> entry of theirs in pending,
-- in-flight or dead letters) and they came back at least a while ago (the caller's cutoff, so
-- a write that restored one finds it). Each goes with lib/lifecycle.lua delete_message, as the
-- trimmer removes messages; no count of the cold hash changes: a restored message's unread
-- recipients were counted there all along (mark_message.lua takes one off per read).
-- KEYS[1]  project hash
-- KEYS[2]  warm zset (restored message ids by the µs they came back)
-- KEYS[3]  pending-persistence zset
-- KEYS[4]  in-flight zset
-- KEYS[5]  dead-letter zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  cutoff µs: only messages that came back at or before it
-- ARGV[3]  most messages to look at
-- Returns {"ok", number removed, number left because a change of theirs is not persisted yet}
-- or {"NO_PROJECT"}.
-- @include lib/common.lua
-- @include lib/lifecycle.lua
if redis.call("EXISTS", KEYS[1]) == 0 then return {"NO_PROJECT"} end
local prefix, removed, kept = ARGV[1], 0, 0
local unwritten = {KEYS[3], KEYS[4], KEYS[5]}
local function unpersisted(member)
  for _, key in ipairs(unwritten) do
    if redis.call("ZSCORE", key, member) then return true end
  end
  return false
end
for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", ARGV[2], "LIMIT", 0, tonumber(ARGV[3]))) do
  local msg_key = pkey(prefix, "msg:" .. id)
  local busy = unpersisted("msg:" .. id)
  if not busy then
    local flat = redis.call("HGETALL", msg_key)
    for i = 1, #flat, 2 do
      if string.sub(flat[i], 1, 3) == "rk:" and unpersisted("rcpt:" .. id .. ":" .. string.sub(flat[i], 4)) then
        busy = true
        break
      end
    end
  end
  if busy then
    kept = kept + 1
  else
    if redis.call("HGET", msg_key, "cold") then delete_message(prefix, KEYS[3], id) end
    redis.call("ZREM", KEYS[2], id)
    removed = removed + 1
  end
end
return {"ok", removed, kept}
