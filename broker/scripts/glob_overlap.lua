-- glob_overlap: whether pairs of normalised reservation patterns overlap (some path matches
-- both). The reservation scripts use the same matcher; this entry point lets the test suite
-- hold the Lua matcher equal to its Python twin (broker/globs.py) on a real Redis.
-- KEYS     none
-- ARGV     pattern a1, pattern b1, pattern a2, pattern b2, ...
-- Returns  a list with 1 (overlap) or 0 per pair.
local compiled = {}
local answers = {}
for i = 1, #ARGV, 2 do
  answers[#answers + 1] = patterns_overlap(ARGV[i], ARGV[i + 1], compiled) and 1 or 0
end
return answers
