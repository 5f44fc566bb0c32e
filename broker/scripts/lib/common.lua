-- Shared helpers (keys, time, JSON, agent auth, pending persistence). Redis Lua has no require:
-- a script that uses them starts with "-- @include lib/common.lua", which broker/store/scripts.py
-- resolves when it loads the script.
-- Per-project keys are built here from the project prefix ("<p>:{<slug>}:") with the same
-- suffixes as broker/store/keys.py; change both together.

local function pkey(prefix, suffix)
  return prefix .. suffix
end

-- ISO-8601 UTC text for a Redis TIME pair, as Python's datetime.isoformat() writes it:
-- "2025-01-01T00:03:21.123456+00:00", microseconds only when non-zero.
local function iso_from_time(sec, usec)
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  -- civil-from-days (proleptic Gregorian), integer arithmetic on doubles
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  local h = math.floor(rem / 3600)
  local mi = math.floor((rem - h * 3600) / 60)
  local s = rem - h * 3600 - mi * 60
  local text = string.format("%04d-%02d-%02dT%02d:%02d:%02d", y, m, d, h, mi, s)
  if usec > 0 then text = text .. string.format(".%06d", usec) end
  return text .. "+00:00"
end

-- ISO text for a microsecond timestamp given as a decimal string or number.
local function iso_from_us(us)
  local value = tonumber(us)
  local sec = math.floor(value / 1000000)
  return iso_from_time(sec, value - sec * 1000000)
end

-- Server time once per script: iso text, then microseconds and milliseconds since the epoch
-- as decimal strings (Lua would print a bare number with only 14 significant digits).
local function now()
  local t = redis.call("TIME")
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return iso_from_time(sec, usec), t[1] .. string.format("%06d", usec), t[1] .. string.format("%03d", math.floor(usec / 1000))
end

-- JSON text of a string, or null for nil/empty.
local function jstr(value)
  if value == nil or value == false or value == "" then return "null" end
  return cjson.encode(value)
end

-- JSON array text of a Lua list of strings; cjson writes an empty table as {}, not [].
local function jlist(list)
  if #list == 0 then return "[]" end
  return cjson.encode(list)
end

local function load_agent(agents_key, lower_name)
  local raw = redis.call("HGET", agents_key, lower_name)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- Token check. given_hash is the hex SHA-256 of the token the caller passed ("" = none);
-- comparing digests leaks nothing useful through timing. require = "1" when the caller's
-- session is not already bound to this agent under `required` auth.
local function auth_error(agent, given_hash, require)
  if given_hash ~= "" then
    if agent.token_hash ~= given_hash then return "BAD_TOKEN" end
    return nil
  end
  if require == "1" then return "AUTH_REQUIRED" end
  return nil
end

-- The agent with this name (any case), authenticated, or an error reply table.
local function resolve_agent(project_key, agents_key, name, given_hash, require)
  local agent = load_agent(agents_key, string.lower(name))
  if not agent then
    -- an agent implies its project, so the project is looked up only to name the error
    if redis.call("EXISTS", project_key) == 0 then return nil, {"NO_PROJECT"} end
    return nil, {"NO_AGENT", name}
  end
  local err = auth_error(agent, given_hash, require)
  if err then return nil, {err, agent.name} end
  return agent, nil
end

-- Record a change for the persistence worker: add the member to the project's pending set and
-- claim the "drain job scheduled" flag (<pending>:flag, see broker/store/keys.py). Returns 1 when
-- this call set the flag, so the caller enqueues one job; a burst of writes enqueues once.
-- The flag expires on its own, so a lost enqueue delays persistence by at most its TTL.
local PENDING_FLAG_TTL_MS = 5000
local function mark_pending(pending_key, ms, member)
  redis.call("ZADD", pending_key, ms, member)
  if redis.call("SET", pending_key .. ":flag", "1", "NX", "PX", PENDING_FLAG_TTL_MS) then return 1 end
  return 0
end

-- mark_pending for a list of members: one ZADD and one flag claim. Returns 1, 0, or 0 for none.
local function mark_pending_all(pending_key, ms, members)
  if #members == 0 then return 0 end
  local args = {}
  for _, member in ipairs(members) do
    args[#args + 1] = ms
    args[#args + 1] = member
  end
  redis.call("ZADD", pending_key, unpack(args))
  if redis.call("SET", pending_key .. ":flag", "1", "NX", "PX", PENDING_FLAG_TTL_MS) then return 1 end
  return 0
end
