-- list_links: an agent's contact links, read after checking its token (read-only).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- ARGV[1]  project key prefix
-- ARGV[2]  agent name (any case)
-- ARGV[3]  SHA-256 hex of the token passed, "" for none
-- ARGV[4]  "1" if a token is required
-- Returns {"ok", agent name, now in epoch microseconds, field, link JSON, field, ...} or an
-- error reply {"NO_PROJECT"|"NO_AGENT"|"BAD_TOKEN"|"AUTH_REQUIRED", ...}.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return err end
local _, us = now()
local reply = {"ok", agent.name, us}
local all = redis.call("HGETALL", pkey(ARGV[1], "links:" .. string.lower(agent.name)))
for i = 1, #all do reply[#reply + 1] = all[i] end
return reply
