-- acquire_build_slot: take (or re-take) the agent's lease on a build slot, atomically. Always
-- granted (advisory, as file reservations are); the reply lists the conflicts: the other
-- holders' live leases of the slot when either side is exclusive. Re-acquiring keeps the
-- lease's acquired time and extends its expiry to the later of the old one and now + ttl.
-- KEYS[1]  project hash
-- KEYS[2]  agents hash
-- KEYS[3]  the slot's lease hash (<p>:{slug}:slot:<slot>, lib/build_slots.lua)
-- ARGV[1]  agent name (any case)
-- ARGV[2]  SHA-256 hex of the token passed, "" for none
-- ARGV[3]  "1" if a token is required
-- ARGV[4]  slot name
-- ARGV[5]  branch
-- ARGV[6]  ttl in microseconds
-- ARGV[7]  exclusive "1" or "0"
-- ARGV[8]  most live leases a slot may hold (a new holder past it is refused)
-- Returns {"ok", lease JSON, conflicts JSON (leases, oldest first)},
-- {"SLOT_FULL", live leases} or {"PROJECT_ARCHIVED", human_key} (nothing written), or an
-- error table from resolve_agent.
-- @include lib/common.lua
-- @include lib/build_slots.lua
local archived = redis.call("HMGET", KEYS[1], "archived_at", "human_key")
if archived[1] then return {"PROJECT_ARCHIVED", archived[2]} end
local agent, err = resolve_agent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if err then return err end
local _, now_us = now()
local now_num = tonumber(now_us)
local exclusive = ARGV[7] == "1"
local holder = slot_holder(agent.name, ARGV[5])
local live = slot_live(KEYS[3], now_num)
local own = live[holder]
local conflicts, others = {}, 0
for field, lease in pairs(live) do
  if field ~= holder then
    others = others + 1
    if exclusive or lease.exclusive then conflicts[#conflicts + 1] = lease end
  end
end
if own == nil and others >= tonumber(ARGV[8]) then return {"SLOT_FULL", others} end
table.sort(conflicts, function(a, b)
  if a.acquired_us ~= b.acquired_us then return tonumber(a.acquired_us) < tonumber(b.acquired_us) end
  return a.agent < b.agent
end)
local expires_num = now_num + tonumber(ARGV[6])
local acquired_us = now_us
if own then
  acquired_us = own.acquired_us
  if tonumber(own.expires_us) > expires_num then expires_num = tonumber(own.expires_us) end
end
local lease = {slot = ARGV[4], agent = agent.name, branch = ARGV[5], exclusive = exclusive,
  acquired_us = acquired_us, expires_us = string.format("%.0f", expires_num)}
local encoded = cjson.encode(lease)
redis.call("HSET", KEYS[3], holder, encoded)
live[holder] = lease
slot_expire(KEYS[3], live)
return {"ok", encoded, #conflicts == 0 and "[]" or cjson.encode(conflicts)}
