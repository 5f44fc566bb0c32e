-- sender_pass: authenticate an agent in its own project before it writes into other projects
-- (a cross-project send or contact request), and admit it by its own rate bucket
-- (lib/ratelimit.lua), which the other projects' scripts cannot reach: without this a sender
-- writing only elsewhere was never limited.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  active hash
-- ARGV[1]  agent name (any case)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required
-- ARGV[4]  project key prefix "<p>:{slug}:" (the bucket is rate:<lower name>)
-- ARGV[5]  the agent's rate-limit spec "<per second>:<burst>", "" for none
-- ARGV[6]  tokens this call pays once admitted
-- Returns {"ok", agent JSON, last_active_ts}, an error table {"NO_PROJECT"|"NO_AGENT"|...}, or
-- {"RATE_LIMITED", milliseconds to wait} (nothing written).
-- @include lib/common.lua
-- @include lib/ratelimit.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if err then return err end
local _, _, ms = now()
local bucket = rate_open(pkey(ARGV[4], "rate:" .. string.lower(agent.name)), ARGV[5], ms)
local wait = rate_wait(bucket)
if wait then return {"RATE_LIMITED", wait} end
rate_pay(bucket, tonumber(ARGV[6]))
return {"ok", redis.call("HGET", KEYS[2], string.lower(ARGV[1])), redis.call("HGET", KEYS[3], agent.name)}
