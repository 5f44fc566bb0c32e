-- project_state: archive or unarchive a project, or only check project admin auth, in one call.
-- archive sets archived_at (kept when already archived); unarchive removes the field.
-- Project admin auth: a token of any agent of the project, or a session bound to one of them.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  pending-persistence zset
-- ARGV[1]  operation: "archive", "unarchive" or "check" (auth only, writes nothing)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required
-- ARGV[4]  the agent this session is bound to in the project ("" for none)
-- Returns {"ok", archived_at or "", 1 if a persistence drain must be enqueued else 0},
-- {"NO_PROJECT"}, {"BAD_ADMIN_TOKEN"}, {"ADMIN_AUTH_REQUIRED"} or {"TOO_MANY_AGENTS"} (a token
-- is searched among at most ADMIN_SCAN_MAX agents, lib/lifecycle.lua).
-- @include lib/common.lua
-- @include lib/lifecycle.lua
local project = redis.call("HMGET", KEYS[1], "id", "archived_at")
if not project[1] then return {"NO_PROJECT"} end
local err = admin_error(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if err then return {err} end
local op = ARGV[1]
if op == "check" then return {"ok", project[2] or "", 0} end
local iso, _, ms = now()
local archived_at = ""
if op == "archive" then
  archived_at = project[2] or iso
  redis.call("HSET", KEYS[1], "archived_at", archived_at)
else
  redis.call("HDEL", KEYS[1], "archived_at")
end
return {"ok", archived_at, mark_pending(KEYS[3], ms, "project:" .. project[1])}
