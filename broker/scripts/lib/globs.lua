-- Reservation pattern overlap: the Lua twin of broker/reservations/globs.py (property tests
-- hold them equal).
-- Patterns arrive normalised by Python (segments joined by "/", no empty/"."/".." segments,
-- classes well formed, within the caps), so this file only compiles and compares them.
-- A path matches a pattern if it matches the glob reading or equals the pattern's text.
-- Characters are UTF-8 sequences; class members are ASCII (checked in Python).

local GLOBSTAR = "**"
local STAR = 0
-- Table cells filled by segments_meet so far in this script: the work of its overlap tests.
-- reserve.lua estimates them before matching (pair_steps) and stops past its step budget.
local glob_steps = 0

local function has_wildcards(text)
  return string.find(text, "[%*%?%[]") ~= nil
end

-- The index just past the UTF-8 character that starts at byte i (its continuation bytes
-- are 0x80..0xBF), so a multi-byte character is one token, as in Python.
local function utf8_char_end(text, i)
  local j, n = i + 1, #text
  if string.byte(text, i) >= 0xC0 then
    while j <= n do
      local b = string.byte(text, j)
      if b < 0x80 or b >= 0xC0 then break end
      j = j + 1
    end
  end
  return j
end

-- The UTF-8 characters of a literal text, as single-character strings.
local function utf8_chars(text)
  local chars = {}
  local i = 1
  while i <= #text do
    local j = utf8_char_end(text, i)
    chars[#chars + 1] = string.sub(text, i, j - 1)
    i = j
  end
  return chars
end

-- A glob segment as tokens: STAR, a one-character string (literal), or a class table
-- {neg = bool, lo1, hi1, lo2, hi2, ...} of inclusive byte ranges ("?" is {neg = true}).
local function glob_tokens(text)
  local tokens = {}
  local i, n = 1, #text
  while i <= n do
    local c = string.sub(text, i, i)
    if c == "*" then
      if tokens[#tokens] ~= STAR then tokens[#tokens + 1] = STAR end
      i = i + 1
    elseif c == "?" then
      tokens[#tokens + 1] = {neg = true}
      i = i + 1
    elseif c == "[" then
      local class = {neg = false}
      i = i + 1
      local m = string.sub(text, i, i)
      if m == "!" or m == "^" then class.neg = true; i = i + 1 end
      local first = true
      while true do
        m = string.sub(text, i, i)
        if m == "]" and not first then break end
        first = false
        if string.sub(text, i + 1, i + 1) == "-" and i + 2 <= n and string.sub(text, i + 2, i + 2) ~= "]" then
          class[#class + 1] = string.byte(text, i)
          class[#class + 1] = string.byte(text, i + 2)
          i = i + 3
        else
          class[#class + 1] = string.byte(text, i)
          class[#class + 1] = string.byte(text, i)
          i = i + 1
        end
      end
      tokens[#tokens + 1] = class
      i = i + 1
    else
      local j = utf8_char_end(text, i)
      tokens[#tokens + 1] = string.sub(text, i, j - 1)
      i = j
    end
  end
  return tokens
end

-- Segments: GLOBSTAR, or {s = text, lit = true} (compared as text), or {s = text, toks = tokens}.
local function compile_reading(pattern, literal)
  local segments = {}
  for part in string.gmatch(pattern, "[^/]+") do
    if not literal and part == GLOBSTAR then
      segments[#segments + 1] = GLOBSTAR
    elseif literal or not has_wildcards(part) then
      segments[#segments + 1] = {s = part, lit = true}
    else
      segments[#segments + 1] = {s = part, toks = glob_tokens(part)}
    end
  end
  return segments
end

-- The readings of a pattern: its glob reading, plus its literal reading when that differs.
local function compile_pattern(pattern)
  if not has_wildcards(pattern) then return {compile_reading(pattern, true)} end
  return {compile_reading(pattern, false), compile_reading(pattern, true)}
end

local function in_ranges(code, class)
  for k = 1, #class, 2 do
    if code >= class[k] and code <= class[k + 1] then return true end
  end
  return false
end

-- Whether every byte lo..hi lies in the union of the class's ranges.
local function range_covered(lo, hi, class)
  for code = lo, hi do
    if not in_ranges(code, class) then return false end
  end
  return true
end

local function chars_meet(a, b)
  local ta, tb = type(a), type(b)
  if ta == "string" and tb == "string" then return a == b end
  if ta == "string" or tb == "string" then
    local char, class = a, b
    if tb == "string" then char, class = b, a end
    if #char > 1 then return class.neg end  -- non-ASCII: only in a negated (or '?') class
    return in_ranges(string.byte(char), class) ~= class.neg
  end
  if a.neg and b.neg then return true end
  if a.neg or b.neg then
    local pos, neg = a, b
    if a.neg then pos, neg = b, a end
    for k = 1, #pos, 2 do
      if not range_covered(pos[k], pos[k + 1], neg) then return true end
    end
    return false
  end
  for k = 1, #a, 2 do
    for l = 1, #b, 2 do
      if a[k] <= b[l + 1] and b[l] <= a[k + 1] then return true end
    end
  end
  return false
end

local function seg_tokens(seg)
  if seg.toks == nil then seg.toks = utf8_chars(seg.s) end
  return seg.toks
end

-- Whether some segment text matches both segments. A table filled from the ends one row at a
-- time (below[j]: the rests a[i+1..] and b[j..] meet), not a memoised recursive walk: on
-- segments hundreds of characters long the walk's calls and memo table took Redis ~100 ms.
local function segments_meet(x, y)
  if x.lit and y.lit then return x.s == y.s end
  local a, b = seg_tokens(x), seg_tokens(y)
  local na, nb = #a, #b
  glob_steps = glob_steps + (na + 1) * (nb + 1)
  local below, row = {}, {}
  for i = na + 1, 1, -1 do
    local t = a[i]
    for j = nb + 1, 1, -1 do
      local u = b[j]
      local result
      if i > na and j > nb then
        result = true
      elseif t == STAR then
        result = below[j] or (j <= nb and row[j + 1])
      elseif u == STAR then
        result = row[j + 1] or (i <= na and below[j])
      elseif i <= na and j <= nb then
        if below[j + 1] then
          if type(t) == "string" and type(u) == "string" then
            result = t == u
          else
            result = chars_meet(t, u)
          end
        else
          result = false
        end
      else
        result = false
      end
      row[j] = result
    end
    below, row = row, below
  end
  return below[1] == true
end

-- Whether some path matches both segment lists.
local function paths_meet(a, b)
  local na, nb = #a, #b
  local memo = {}
  local function walk(i, j)
    local key = i * 64 + j
    local known = memo[key]
    if known ~= nil then return known end
    local result
    if i > na and j > nb then
      result = true
    elseif i <= na and a[i] == GLOBSTAR then
      result = walk(i + 1, j) or (j <= nb and walk(i, j + 1))
    elseif j <= nb and b[j] == GLOBSTAR then
      result = walk(i, j + 1) or (i <= na and walk(i + 1, j))
    elseif i <= na and j <= nb then
      result = segments_meet(a[i], b[j]) and walk(i + 1, j + 1)
    else
      result = false
    end
    memo[key] = result
    return result
  end
  return walk(1, 1)
end

local VIRTUAL = {"tool://", "resource://", "service://"}

local function is_virtual(pattern)
  for _, prefix in ipairs(VIRTUAL) do
    if string.sub(pattern, 1, #prefix) == prefix then return true end
  end
  return false
end

-- Whether two normalised patterns overlap. `compiled` caches readings across calls of one script.
local function patterns_overlap(a, b, compiled)
  if a == b then return true end
  if is_virtual(a) or is_virtual(b) then return false end
  local ra, rb = compiled[a], compiled[b]
  if ra == nil then ra = compile_pattern(a); compiled[a] = ra end
  if rb == nil then rb = compile_pattern(b); compiled[b] = rb end
  for _, x in ipairs(ra) do
    for _, y in ipairs(rb) do
      if paths_meet(x, y) then return true end
    end
  end
  return false
end

-- The work of an overlap test, before running it (twin of broker/reservations/globs.py pair_steps):
-- {glob, total, readings - 1} per pattern, where glob counts characters plus one of each
-- segment that holds a wildcard ("**" aside) and total of every segment ("**" too: the literal
-- reading compares it as text); characters, not bytes, as in Python.
local function pattern_weights(pattern)
  local glob, total = 0, 0
  for part in string.gmatch(pattern, "[^/]+") do
    local _, continuation = string.gsub(part, "[\128-\191]", "")
    local size = #part - continuation + 1
    total = total + size
    if part ~= GLOBSTAR and has_wildcards(part) then glob = glob + size end
  end
  return {glob, total, has_wildcards(pattern) and 1 or 0}
end

-- An upper bound on the cells patterns_overlap(a, b) fills; `weights` caches pattern_weights.
local function pair_steps(a, b, weights)
  if a == b or is_virtual(a) or is_virtual(b) then return 0 end
  local wa, wb = weights[a], weights[b]
  if wa == nil then wa = pattern_weights(a); weights[a] = wa end
  if wb == nil then wb = pattern_weights(b); weights[b] = wb end
  return (1 + wb[3]) * wa[1] * wb[2] + (1 + wa[3]) * wa[2] * wb[1]
end
