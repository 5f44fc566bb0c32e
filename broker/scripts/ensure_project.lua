-- ensure_project: create a project once; concurrent callers all get the same record.
-- KEYS[1]  project hash (<p>:{slug}:project)
-- KEYS[2]  pending-persistence zset of the project
-- ARGV[1]  id to use if the project is new (allocated by the caller)
-- ARGV[2]  slug
-- ARGV[3]  human_key
-- Returns {id, slug, human_key, created_at, created (1 if this call created it),
--          1 if a persistence job must be enqueued (see mark_pending) else 0,
--          archived_at or "" (set by archive_project)}.
-- @include lib/common.lua
local existing = redis.call("HMGET", KEYS[1], "id", "slug", "human_key", "created_at", "archived_at")
if existing[1] then
  return {existing[1], existing[2], existing[3], existing[4], 0, 0, existing[5] or ""}
end
local iso, _, ms = now()
redis.call("HSET", KEYS[1], "id", ARGV[1], "slug", ARGV[2], "human_key", ARGV[3], "created_at", iso)
local schedule = mark_pending(KEYS[2], ms, "project:" .. ARGV[1])
return {ARGV[1], ARGV[2], ARGV[3], iso, 1, schedule, ""}
