-- agent_state: retire, unretire or deregister an agent (its record in the agents hash).
-- retire sets retired_at (kept when already retired); unretire removes the field (absent when
-- active: cjson cannot store a JSON null); deregister sets contact_policy "block_all" and
-- prefixes task_description with "[DEREGISTERED at <iso>] " (once). Each is announced on the
-- project's doorbell channel (the web view).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  agent name (any case)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required ("0" also when the caller is the operator)
-- ARGV[4]  operation: "retire", "unretire" or "deregister"
-- ARGV[5]  the project's doorbell shard channel (SPUBLISH)
-- ARGV[6]  the change event published there (broker/store/doorbell.py change_event)
-- Returns {"ok", agent JSON, 1 if a persistence drain must be enqueued else 0} or an error
-- table from resolve_agent.
-- @include lib/common.lua
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if err then return err end
local iso, _, ms = now()
local op = ARGV[4]
if op == "retire" then
  if type(agent.retired_at) ~= "string" then agent.retired_at = iso end
elseif op == "unretire" then
  agent.retired_at = nil
else
  agent.contact_policy = "block_all"
  local task = type(agent.task_description) == "string" and agent.task_description or ""
  if string.sub(task, 1, 17) ~= "[DEREGISTERED at " then
    agent.task_description = "[DEREGISTERED at " .. iso .. "] " .. task
  end
end
local encoded = cjson.encode(agent)
redis.call("HSET", KEYS[2], string.lower(agent.name), encoded)
redis.call("SPUBLISH", ARGV[5], ARGV[6])
return {"ok", encoded, mark_pending(KEYS[3], ms, "agent:" .. agent.id)}
