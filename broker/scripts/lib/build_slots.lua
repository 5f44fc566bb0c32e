-- Build slot leases (broker/reservations/build_slots.py): one HASH per slot of a project,
-- <p>:{slug}:slot:<slot>, field "<lower agent> <branch>" (a holder; branches hold no space),
-- value the lease as JSON {slot, agent, branch, exclusive, acquired_us, expires_us} with the
-- times as decimal strings (cjson keeps 14 significant digits, microseconds need 16).
-- An expired lease is dropped by the next script that reads the slot, and the hash expires
-- with its last lease, so a slot nobody uses leaves nothing behind.

local function slot_holder(agent_name, branch)
  return string.lower(agent_name) .. " " .. branch
end

-- The slot's live leases, holder -> lease table; expired ones are deleted on the way.
local function slot_live(slot_key, now_num)
  local flat = redis.call("HGETALL", slot_key)
  local live, dead = {}, {}
  for i = 1, #flat, 2 do
    local lease = cjson.decode(flat[i + 1])
    if tonumber(lease.expires_us) > now_num then
      live[flat[i]] = lease
    else
      dead[#dead + 1] = flat[i]
    end
  end
  if #dead > 0 then redis.call("HDEL", slot_key, unpack(dead)) end
  return live
end

-- Let the hash expire a second after its longest live lease (or delete it when none is left).
local function slot_expire(slot_key, live)
  local latest = nil
  for _, lease in pairs(live) do
    local expires = tonumber(lease.expires_us)
    if latest == nil or expires > latest then latest = expires end
  end
  if latest == nil then
    redis.call("DEL", slot_key)
  else
    redis.call("PEXPIREAT", slot_key, string.format("%.0f", math.floor(latest / 1000) + 1000))
  end
end
