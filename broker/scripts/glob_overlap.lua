-- glob_overlap: whether pairs of normalised reservation patterns overlap (some path matches
-- both), and what each test cost. The reservation scripts use the same matcher; this entry
-- point lets the test suite hold the Lua matcher (and its work estimate) equal to its Python
-- twin (broker/reservations/globs.py) on a real Redis.
-- KEYS     none
-- ARGV     pattern a1, pattern b1, pattern a2, pattern b2, ...
-- Returns  {answers, steps, bounds}: per pair, 1 (overlap) or 0; the matcher table cells it
--          filled (glob_steps); and pair_steps, the bound reserve.lua prices it at beforehand.
-- @include lib/globs.lua
local answers, steps, bounds = {}, {}, {}
local weights = {}
for i = 1, #ARGV, 2 do
  local before = glob_steps
  answers[#answers + 1] = patterns_overlap(ARGV[i], ARGV[i + 1], {}) and 1 or 0
  steps[#steps + 1] = glob_steps - before
  bounds[#bounds + 1] = pair_steps(ARGV[i], ARGV[i + 1], weights)
end
return {answers, steps, bounds}
