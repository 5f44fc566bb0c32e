-- get_agent: read one agent's record after checking the caller's token (read-only).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  active hash
-- ARGV[1]  agent name (any case)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required
-- Returns {"ok", agent JSON, last_active_ts} or an error table {"NO_PROJECT"|"NO_AGENT"|...}.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if err then return err end
return {"ok", redis.call("HGET", KEYS[2], string.lower(ARGV[1])), redis.call("HGET", KEYS[3], agent.name)}
