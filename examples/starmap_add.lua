-- starmap: each item is a list of arguments, so add(a, b) gets two.
-- Prints 3, 7 and 11.
-- Run: lmp examples/starmap_add.lua
local lmp = require "lmp"

local function add(a, b)
  return a + b
end

local pool <close> = lmp.Pool(3)
for _, sum in ipairs(pool:starmap(add, {{1, 2}, {3, 4}, {5, 6}})) do
  print(sum)
end
