-- register_agent: create an agent, or update an existing one, claiming its name atomically.
-- Names are unique per project case-insensitively: the agents hash is keyed by lower(name).
-- A registration or update is announced on the project's doorbell channel (the web view).
-- KEYS[1]  project hash
-- KEYS[2]  agents hash (lower name -> agent JSON)
-- KEYS[3]  active hash (name -> last_active_ts)
-- KEYS[4]  pending-persistence zset
-- ARGV[1]  mode: "upsert" (ARGV[12] may exist: update it) or "create" (first free candidate)
-- ARGV[2]  id for a new agent
-- ARGV[3]  program
-- ARGV[4]  model
-- ARGV[5]  task_description
-- ARGV[6]  attachments_policy
-- ARGV[7]  SHA-256 hex of the registration token minted for a new agent (only the digest
--          is stored: a dump of Redis reveals no token)
-- ARGV[8]  SHA-256 hex of the token the caller passed, "" for none
-- ARGV[9]  "1" if an existing agent must be authenticated by token
-- ARGV[10] the project's doorbell shard channel (SPUBLISH)
-- ARGV[11] the change event published there (broker/store/doorbell.py change_event)
-- ARGV[12..] candidate names, in order of preference
-- Registering an existing agent makes it active again (removes retired_at). An archived
-- project (archived_at set) takes no new or updated agents.
-- Returns {"ok", agent JSON, last_active_ts, created 0|1, 1 if a persistence job must be
-- enqueued (see mark_pending) else 0}, or {"NO_PROJECT"}, {"TAKEN"},
-- {"BAD_TOKEN", name}, {"AUTH_REQUIRED", name}, {"PROJECT_ARCHIVED", human_key}.
-- @include lib/common.lua
local project = redis.call("HMGET", KEYS[1], "id", "archived_at", "human_key")
local project_id = project[1]
if not project_id then return {"NO_PROJECT"} end
if project[2] then return {"PROJECT_ARCHIVED", project[3]} end
local iso, _, ms = now()

if ARGV[1] == "upsert" then
  local agent = load_agent(KEYS[2], string.lower(ARGV[12]))
  if agent then
    local err = auth_error(agent, ARGV[8], ARGV[9])
    if err then return {err, agent.name} end
    agent.program = ARGV[3]
    agent.model = ARGV[4]
    agent.task_description = ARGV[5]
    agent.attachments_policy = ARGV[6]
    agent.retired_at = nil
    local encoded = cjson.encode(agent)
    redis.call("HSET", KEYS[2], string.lower(agent.name), encoded)
    redis.call("HSET", KEYS[3], agent.name, iso)
    local schedule = mark_pending(KEYS[4], ms, "agent:" .. agent.id)
    redis.call("SPUBLISH", ARGV[10], ARGV[11])
    return {"ok", encoded, iso, 0, schedule}
  end
end

for i = 12, #ARGV do
  local lower = string.lower(ARGV[i])
  if redis.call("HEXISTS", KEYS[2], lower) == 0 then
    local agent = {
      id = tonumber(ARGV[2]), name = ARGV[i], program = ARGV[3], model = ARGV[4],
      task_description = ARGV[5], inception_ts = iso, project_id = tonumber(project_id),
      attachments_policy = ARGV[6], contact_policy = "auto",
      token_hash = ARGV[7],
    }
    local encoded = cjson.encode(agent)
    redis.call("HSET", KEYS[2], lower, encoded)
    redis.call("HSET", KEYS[3], ARGV[i], iso)
    local schedule = mark_pending(KEYS[4], ms, "agent:" .. ARGV[2])
    redis.call("SPUBLISH", ARGV[10], ARGV[11])
    return {"ok", encoded, iso, 1, schedule}
  end
end
return {"TAKEN"}
