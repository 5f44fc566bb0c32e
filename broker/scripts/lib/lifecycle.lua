-- Lifecycle helpers (project admin auth, hard delete, purge).
-- @include lib/common.lua

-- Project member auth (project_state.lua; the caller passes "" / "0" when the operator
-- credential was presented, broker/lifecycle/state.py): a token that belongs to any agent of the
-- project, or (require = "1" only) a session bound to an agent of it (actor).
-- Returns nil when allowed, else "BAD_ADMIN_TOKEN" or "ADMIN_AUTH_REQUIRED".
-- Most agents a token is searched among (about 3 ms): any caller can send a token and joining
-- is free, so a crowded project is counted before it is read (20,000 agents took ~60 ms).
local ADMIN_SCAN_MAX = 2000
local function admin_error(agents_key, given_hash, require, actor)
  if given_hash ~= "" then
    if redis.call("HLEN", agents_key) > ADMIN_SCAN_MAX then return "TOO_MANY_AGENTS" end
    -- the digest is searched as plain text first (fast); only a record holding it is decoded
    for _, raw in ipairs(redis.call("HVALS", agents_key)) do
      if string.find(raw, given_hash, 1, true) and cjson.decode(raw).token_hash == given_hash then return nil end
    end
    return "BAD_ADMIN_TOKEN"
  end
  if require == "1" then
    if actor ~= "" and redis.call("HEXISTS", agents_key, string.lower(actor)) == 1 then return nil end
    return "ADMIN_AUTH_REQUIRED"
  end
  return nil
end

-- Stream entry ids are the server's millisecond clock when the entry was added (or, after
-- rehydrate, the message's creation time), so a message's entry sits next to its created_ms:
-- look in a window around it instead of scanning the stream. Deletes the entry whose "m" is id.
local STREAM_WINDOW_MS = 2000
local function stream_delete(key, created_ms, id)
  local start = string.format("%.0f", math.max(0, created_ms - STREAM_WINDOW_MS))
  for _, entry in ipairs(redis.call("XRANGE", key, start, "+", "COUNT", 512)) do
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == "m" then
        if fields[j + 1] == id then
          redis.call("XDEL", key, entry[1])
          return 1
        end
        break
      end
    end
    if tonumber(string.match(entry[1], "^(%d+)")) > created_ms + STREAM_WINDOW_MS then return 0 end
  end
  return 0
end

-- The project's slug, from its key prefix "<p>:{slug}:".
local function prefix_slug(prefix)
  return string.match(prefix, "{([^{}]*)}:$")
end

local function json_text(value)
  if type(value) == "string" then return value end
  return ""
end

-- Delete one message everywhere in its project: hash, body, every recipient's inbox entry,
-- unread/urgent/topic indexes, the sender's outbox entry and topic index, its thread index and
-- its pending-persistence entries. `entries` (optional) maps a stream key suffix ("inbox:<name>",
-- "outbox:<name>") to the message's entry id there, when the caller already found it; a held
-- message delivered on approval has its inbox entry id in dc:<name>; other entries are looked
-- for around the creation time. Returns {head JSON, recipients JSON, recipient count} or nil
-- when the message is already gone.
local function delete_message(prefix, pending_key, id, entries)
  local msg_key = pkey(prefix, "msg:" .. id)
  local flat = redis.call("HGETALL", msg_key)
  redis.call("HDEL", pkey(prefix, "bodies"), id)
  if #flat == 0 then
    redis.call("ZREM", pending_key, "msg:" .. id)
    return nil
  end
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  local head = cjson.decode(record.head)
  local created_ms = math.floor(tonumber(record.created_us) / 1000)
  local topic = string.lower(json_text(head.topic))
  local thread = json_text(head.thread_id)
  local stale, count = {"msg:" .. id}, 0
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 3) == "rk:" then
      local r = string.sub(flat[i], 4)
      count = count + 1
      local known = entries and entries["inbox:" .. r] or record["dc:" .. r]
      if known then
        redis.call("XDEL", pkey(prefix, "inbox:" .. r), known)
      else
        stream_delete(pkey(prefix, "inbox:" .. r), created_ms, id)
      end
      redis.call("SREM", pkey(prefix, "unread:" .. r), id)
      redis.call("ZREM", pkey(prefix, "urgent:" .. r), id)
      if topic ~= "" then redis.call("ZREM", pkey(prefix, "rtopic:" .. r .. ":" .. topic), id) end
      stale[#stale + 1] = "rcpt:" .. id .. ":" .. r
    end
  end
  if record.sender then
    local known = entries and entries["outbox:" .. record.sender]
    if known then
      redis.call("XDEL", pkey(prefix, "outbox:" .. record.sender), known)
    else
      stream_delete(pkey(prefix, "outbox:" .. record.sender), created_ms, id)
    end
    if topic ~= "" then redis.call("ZREM", pkey(prefix, "stopic:" .. record.sender .. ":" .. topic), id) end
  end
  if thread ~= "" then redis.call("ZREM", pkey(prefix, "thread:" .. thread), id) end
  -- held for recipients until they approve the sender (hk:<recipient>): out of those sets too
  local pair = record.sender and (string.match(record.sender, "^project:(.*)$")
    or (prefix_slug(prefix) .. "#" .. record.sender))
  for i = 1, #flat, 2 do
    if pair and string.sub(flat[i], 1, 3) == "hk:" then
      redis.call("ZREM", pkey(prefix, "held:" .. string.sub(flat[i], 4) .. ":" .. pair), id)
    end
  end
  redis.call("DEL", msg_key)
  redis.call("ZREM", pending_key, unpack(stale))
  return {record.head, record.recipients or "{}", count}
end

-- A field list of a stream entry as a table.
local function entry_fields(entry)
  local fields = {}
  for j = 1, #entry[2], 2 do fields[entry[2][j]] = entry[2][j + 1] end
  return fields
end
