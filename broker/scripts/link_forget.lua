-- link_forget: in one project, forget the copies of contact links whose other endpoint was a
-- deleted agent of ANOTHER project (hard_delete_agent, hard_delete_project): the link fields,
-- their pending entries, and the mail the deleted agent sent that is held here for the owner
-- (lib/contacts.lua forget_link). A copy about a newer agent of that name is left alone.
-- Idempotent.
-- KEYS[1]  pending-persistence zset
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2..] triples: owner (lower name of this project's agent), links field
--          ("in:<slug>#<deleted>" / "out:<slug>#<deleted>"), the deleted agent's id
-- Returns {"ok", number of link copies removed}.
-- @include lib/contacts.lua
local removed = 0
for i = 2, #ARGV, 3 do
  removed = removed + forget_link(ARGV[1], KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return {"ok", removed}
