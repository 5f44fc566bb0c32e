-- link_put: write the copy of a contact link that lives in this project (the other endpoint's
-- project wrote its own copy first). Idempotent: an older version never replaces a newer one,
-- so a retried or late call converges.
-- KEYS[1]  pending-persistence zset
-- ARGV[1]  project key prefix
-- ARGV[2]  project slug
-- ARGV[3]  link JSON (see lib/contacts.lua)
-- Returns {"ok", persistence flag} or {"OLDER"} when a newer version is already here.
-- @include lib/common.lua
-- @include lib/contacts.lua
local link = cjson.decode(ARGV[3])
local here = link.a_slug == ARGV[2] and "a" or "b"
local owner = string.lower(link[here])
local field = here == "a" and ("out:" .. link.b_slug .. "#" .. string.lower(link.b))
  or ("in:" .. link.a_slug .. "#" .. string.lower(link.a))
local raw = redis.call("HGET", pkey(ARGV[1], "links:" .. owner), field)
if raw and tonumber(cjson.decode(raw).upd_us) > tonumber(link.upd_us) then return {"OLDER"} end
local _, _, ms = now()
return {"ok", store_link(ARGV[1], link, ARGV[2], KEYS[1], ms)}
