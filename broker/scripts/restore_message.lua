-- restore_message: put a message the hot-window trimmer moved out of Redis back for a write on
-- it (mark read, acknowledge; broker/mail/cold.py), from its index rows: its msg:<id> hash as
-- the send and mark scripts left it (broker/store/commands/rehydrate.py message_record builds
-- the fields), marked "cold" = "1", and its body. No stream entry, unread-set member, topic,
-- urgent or thread index entry comes back: reads keep finding it in the index, and its unread
-- recipients stay counted in the cold hash's unread:<name> (mark_message.lua takes one off when
-- one of them reads it). Listed in `warm` by the µs it came back, until cool_messages.lua
-- removes it once persisted. A message already in Redis is left alone.
-- KEYS[1]  project hash
-- KEYS[2]  the message's hash (msg:<id>)
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  message id
-- ARGV[3]  body_md
-- ARGV[4..] the hash's field, value pairs
-- Returns {"ok", 1 if restored, 0 if it was in Redis already} or {"NO_PROJECT"}.
-- @include lib/common.lua
if redis.call("EXISTS", KEYS[1]) == 0 then return {"NO_PROJECT"} end
if redis.call("EXISTS", KEYS[2]) == 1 then return {"ok", 0} end
local prefix, id = ARGV[1], ARGV[2]
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = "cold"
fields[#fields + 1] = "1"
redis.call("HSET", KEYS[2], unpack(fields))
redis.call("HSET", pkey(prefix, "bodies"), id, ARGV[3])
local _, us = now()
redis.call("ZADD", pkey(prefix, "warm"), us, id)
return {"ok", 1}
