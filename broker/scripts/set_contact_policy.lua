-- set_contact_policy: change an agent's contact policy after checking its token.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  agent name (any case)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required
-- ARGV[4]  policy (already checked: open | auto | contacts_only | block_all)
-- Returns {"ok", agent name, policy, persistence flag} or an error reply.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if err then return err end
agent.contact_policy = ARGV[4]
redis.call("HSET", KEYS[2], string.lower(agent.name), cjson.encode(agent))
local _, _, ms = now()
return {"ok", agent.name, ARGV[4], mark_pending(KEYS[3], ms, "agent:" .. agent.id)}
