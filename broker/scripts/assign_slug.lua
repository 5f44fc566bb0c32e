-- assign_slug: give a human_key (a project's absolute path) its slug, once and for good.
-- The slug is the first candidate that this human_key already owns or that nobody owns; the
-- owner of a slug never changes (not even after hard_delete_project), so two repositories
-- never share one and a slug written down anywhere keeps naming the same repository.
-- KEYS[1]  slug owners (<p>:slugs, HASH slug -> human_key)
-- ARGV[1]  human_key
-- ARGV[2*i], ARGV[2*i+1]  candidate i (plain slug first, then hash-suffixed ones) and the
--          human_key the legacy directory (<p>:projects) holds for it, or "": projects made
--          before <p>:slugs existed are adopted here, so they keep their slug
-- Returns {slug, 1 if this call assigned it else 0}, or {"", 0} when every candidate belongs
-- to another human_key.
local key = ARGV[1]
for i = 2, #ARGV, 2 do
  local slug, legacy = ARGV[i], ARGV[i + 1]
  local owner = redis.call("HGET", KEYS[1], slug)
  if not owner and legacy ~= "" then
    redis.call("HSET", KEYS[1], slug, legacy)
    owner = legacy
  end
  if owner == key then
    return {slug, 0}
  end
  if not owner then
    redis.call("HSET", KEYS[1], slug, key)
    return {slug, 1}
  end
end
return {"", 0}
