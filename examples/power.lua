-- Powers with starmap: one (base, exponent) pair per call.
-- Prints 2 ^ 3 = 8, 3 ^ 2 = 9 and 10 ^ 2 = 100.
-- Run: lmp examples/power.lua
local lmp = require "lmp"

local function power(base, exponent)
  local result = 1
  for _ = 1, exponent do result = result * base end
  return result
end

local arglists = {{2, 3}, {3, 2}, {10, 2}}
local pool <close> = lmp.Pool(3)
local results = pool:starmap(power, arglists)
for i = 1, results.n do
  print(("%d ^ %d = %d"):format(arglists[i][1], arglists[i][2], results[i]))
end
