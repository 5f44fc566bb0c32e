-- purge_messages: delete a batch of old messages everywhere in the project (purge_old_messages;
-- the caller picked them from the inbox and outbox streams, whose entries are time-ordered).
-- Each message goes with lib/lifecycle.lua delete_message (hash, body, every recipient's inbox
-- entry and indexes, the sender's outbox entry and topic index, thread index, pending entries);
-- the stream entries the caller found are deleted by id as well. Idempotent.
-- KEYS[1]  project hash
-- KEYS[2]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  number of message ids that follow
-- ARGV[3..] message ids, then pairs (stream key suffix "inbox:<lower>"/"outbox:<lower>", entry id)
-- Returns {"ok", number of messages that were still there} or {"NO_PROJECT"}.
-- @include lib/common.lua
-- @include lib/lifecycle.lua
if redis.call("EXISTS", KEYS[1]) == 0 then return {"NO_PROJECT"} end
local prefix, n, deleted = ARGV[1], tonumber(ARGV[2]), 0
for i = 3, 2 + n do
  if delete_message(prefix, KEYS[2], ARGV[i]) then deleted = deleted + 1 end
end
for i = 3 + n, #ARGV, 2 do
  redis.call("XDEL", pkey(prefix, ARGV[i]), ARGV[i + 1])
end
return {"ok", deleted}
