-- apply runs one call in a worker and blocks until it returns.
-- Prints "The cube of 5 is 125".
-- Run: lmp examples/apply.lua
local lmp = require "lmp"

local function cube(x)
  return x * x * x
end

local pool <close> = lmp.Pool(2)
print("The cube of 5 is " .. pool:apply(cube, {5}))
