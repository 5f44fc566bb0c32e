-- trim_hot: one bounded batch of the hot-window trimmer (broker/lifecycle/hot_window.py): delete
-- from Redis the messages that are persisted and outside the hot window of every stream that
-- holds them, and raise the project's cold marks (docs/data-model.md, "The hot window").
-- A stream's entries outside its window are its oldest ones: those beyond its newest ARGV[4]
-- entries, and those whose id (the ms they were added) is older than now minus ARGV[3]. For
-- each stream named, its entries are walked from the oldest while they are outside the window;
-- each message met is deleted (lib/lifecycle.lua delete_message, with the entries found here)
-- only when
--   * neither msg:<id> nor any rcpt:<id>:<recipient> is in pending, in flight or dead-lettered
--     (its state reached the index and the archive),
--   * it is held for no one (an hk:<name> field whose held-set deadline has not passed),
--   * for every holder, each recipient's inbox in this project and its sender's outbox (a
--     sender of another project has none here), its entry is outside that stream's window
--     too (or that stream no longer holds it).
-- Anything undecided when the work budget runs out stays for the next call.
-- Per message deleted, the cold hash gets in:<recipient> / out:<sender> raised to the entry id
-- removed from that stream, unread:<recipient> + 1 when the message was in unread:<recipient>,
-- and t raised to its created_us. Nothing else is left of it in Redis.
-- KEYS[1]  project hash
-- KEYS[2]  pending-persistence zset
-- KEYS[3]  in-flight zset
-- KEYS[4]  dead-letter zset
-- KEYS[5]  cold hash
-- ARGV[1]  project key prefix "<p>:{slug}:"
-- ARGV[2]  now in ms, "" for the server's clock (tests move it on)
-- ARGV[3]  hot retention in ms
-- ARGV[4]  most entries kept per stream (HOT_INBOX_MAX_MESSAGES)
-- ARGV[5]  work budget: stream entries read plus messages looked at, in this call
-- ARGV[6]  most messages deleted in this call
-- ARGV[7..] stream key suffixes to walk, "inbox:<lower name>" or "outbox:<lower name>"
-- Returns {"ok", messages deleted, work spent, resume} where resume is 0 when every stream named
-- was walked to the end of what is outside its window, else the position (1 = ARGV[7]) of the
-- stream the call stopped in (its budget or its deletions ran out there); or {"NO_PROJECT"}.
-- @include lib/common.lua
-- @include lib/lifecycle.lua
if redis.call("EXISTS", KEYS[1]) == 0 then return {"NO_PROJECT"} end
local prefix = ARGV[1]
local now_ms
if ARGV[2] ~= "" then
  now_ms = tonumber(ARGV[2])
else
  local t = redis.call("TIME")
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cutoff_ms = now_ms - tonumber(ARGV[3])
local now_us = now_ms * 1000
local cap, budget, delete_max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local PAGE = 16
local spent, deleted = 0, 0
local slug = prefix_slug(prefix)

local function entry_ms(entry_id)
  return tonumber(string.match(entry_id, "^(%d+)"))
end

-- a < b for stream entry ids "<ms>-<seq>"
local function id_less(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  if tonumber(am) ~= tonumber(bm) then return tonumber(am) < tonumber(bm) end
  return tonumber(as) < tonumber(bs)
end

-- What this call has read of a stream's entries outside the window, oldest first: ids maps a
-- message id to its entry id, order lists the message ids; done once the first entry inside the
-- window (or the stream's end) was reached. An entry is outside when fewer than `over` entries
-- precede it, or it is older than the cutoff; deleting read entries shifts both alike.
local views = {}
local function view(suffix)
  local v = views[suffix]
  if not v then
    local box, name = string.match(suffix, "^(%a+):(.+)$")
    local key = box == "outbox" and pkey(prefix, "outbox:" .. name) or pkey(prefix, "inbox:" .. name)
    local length = redis.call("XLEN", key)
    v = {key = key, over = length - cap, read = 0, last = nil, ids = {}, order = {}, done = length == 0}
    views[suffix] = v
    spent = spent + 1
  end
  return v
end

-- Read the next page of v's entries outside the window; false when the budget is spent.
local function extend(v)
  local count = math.min(PAGE, budget - spent)
  if count <= 0 then return false end
  local page = redis.call("XRANGE", v.key, v.last and "(" .. v.last or "-", "+", "COUNT", count)
  spent = spent + math.max(1, #page)
  for _, entry in ipairs(page) do
    if v.read >= v.over and entry_ms(entry[1]) >= cutoff_ms then
      v.done = true
      return true
    end
    v.read, v.last = v.read + 1, entry[1]
    local id = entry_fields(entry).m
    if id then
      v.ids[id] = entry[1]
      v.order[#v.order + 1] = id
    end
  end
  if #page < count then v.done = true end
  return true
end

-- Whether the stream's entry of message `id` is outside its window: true (or the stream does not
-- hold it), false (inside), nil (undecided: the budget ran out first). `expect_ms` is when its
-- entry was added: the message's creation, or its delivery on approval (dc:).
local function outside(suffix, id, expect_ms)
  local v = view(suffix)
  while true do
    if v.ids[id] then return true end
    if v.done then
      -- every entry outside the window was read: this one is inside, or was never here (an
      -- entry older than the cutoff would have been read)
      return expect_ms + STREAM_WINDOW_MS < cutoff_ms
    end
    if not extend(v) then return nil end
  end
end

local function anywhere_pending(member)
  return redis.call("ZSCORE", KEYS[2], member) or redis.call("ZSCORE", KEYS[3], member)
    or redis.call("ZSCORE", KEYS[4], member)
end

-- cold-hash changes of this call, applied at the end
local marks, mark_order, unread, unread_order, newest_us = {}, {}, {}, {}, nil
local function raise_mark(field, entry_id)
  if not marks[field] then
    mark_order[#mark_order + 1] = field
    marks[field] = entry_id
  elseif id_less(marks[field], entry_id) then
    marks[field] = entry_id
  end
end

-- "deleted", "kept" or nil (undecided: budget)
local function decide(id)
  spent = spent + 1
  local msg_key = pkey(prefix, "msg:" .. id)
  local flat = redis.call("HGETALL", msg_key)
  if #flat == 0 then return "kept" end -- an entry without its message: not ours to judge
  if anywhere_pending("msg:" .. id) then return "kept" end
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  local created_us = record.created_us
  local created_ms = math.floor(tonumber(created_us) / 1000)
  local pair = record.sender and (string.match(record.sender, "^project:(.*)$") or (slug .. "#" .. record.sender))
  local holders, readers = {}, {}
  for i = 1, #flat, 2 do
    local kind, name = string.sub(flat[i], 1, 3), string.sub(flat[i], 4)
    if kind == "hk:" then
      local deadline = pair and redis.call("ZSCORE", pkey(prefix, "held:" .. name .. ":" .. pair), id)
      if deadline and tonumber(deadline) > now_us then return "kept" end
    elseif kind == "rk:" then
      if anywhere_pending("rcpt:" .. id .. ":" .. name) then return "kept" end
      local delivered = record["dc:" .. name]
      holders[#holders + 1] = {"inbox:" .. name, delivered and entry_ms(delivered) or created_ms, "in:" .. name}
      readers[#readers + 1] = name
    end
  end
  if record.sender and not string.match(record.sender, "^project:") then
    holders[#holders + 1] = {"outbox:" .. record.sender, created_ms, "out:" .. record.sender}
  end
  for _, h in ipairs(holders) do
    local out = outside(h[1], id, h[2])
    if out == nil then return nil end
    if not out then return "kept" end
  end
  local entries = {}
  for _, h in ipairs(holders) do
    local entry_id = views[h[1]].ids[id]
    if entry_id then
      entries[h[1]] = entry_id
      raise_mark(h[3], entry_id)
    end
  end
  for _, name in ipairs(readers) do
    if redis.call("SISMEMBER", pkey(prefix, "unread:" .. name), id) == 1 then
      local field = "unread:" .. name
      if not unread[field] then unread_order[#unread_order + 1] = field end
      unread[field] = (unread[field] or 0) + 1
    end
  end
  if not newest_us or tonumber(created_us) > tonumber(newest_us) then newest_us = created_us end
  delete_message(prefix, KEYS[2], id, entries)
  return "deleted"
end

local resume, decided = 0, {}
for position = 7, #ARGV do
  local v = view(ARGV[position])
  local k, stopped = 1, false
  while true do
    if k > #v.order then
      if v.done then break end
      if not extend(v) then stopped = true break end
    else
      local id = v.order[k]
      if not decided[id] then
        if deleted >= delete_max then stopped = true break end
        local verdict = decide(id)
        if verdict == nil then stopped = true break end
        decided[id] = verdict
        if verdict == "deleted" then deleted = deleted + 1 end
      end
      k = k + 1
    end
  end
  if stopped then
    resume = position - 6
    break
  end
end

local cold = KEYS[5]
for _, field in ipairs(mark_order) do
  local current = redis.call("HGET", cold, field)
  if not current or id_less(current, marks[field]) then redis.call("HSET", cold, field, marks[field]) end
end
for _, field in ipairs(unread_order) do redis.call("HINCRBY", cold, field, unread[field]) end
if newest_us then
  local current = redis.call("HGET", cold, "t")
  if not current or tonumber(current) < tonumber(newest_us) then redis.call("HSET", cold, "t", newest_us) end
end
return {"ok", deleted, spent, resume}
