-- get_message: one stored message as its viewer may see it (read-only).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  viewer name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- ARGV[5]  message id
-- Returns {"ok", head JSON, recipients JSON, lower(sender), viewer name, viewer kind or ""},
-- or {"NO_MESSAGE"} when it does not exist or the viewer is neither its sender nor a recipient.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local me = string.lower(agent.name)
local msg = redis.call("HMGET", pkey(ARGV[1], "msg:" .. ARGV[5]), "head", "recipients", "sender", "rk:" .. me)
if not msg[1] or (msg[3] ~= me and not msg[4]) then return {"NO_MESSAGE"} end
return {"ok", msg[1], msg[2], msg[3], agent.name, msg[4] or ""}
