-- An initializer gives each worker its configuration once, at start: here
-- it sets the global `multiplier` in the worker. Prints 10, 20 and 30.
-- Run: lmp examples/initializer.lua
local lmp = require "lmp"

local function init(factor)
  multiplier = factor
end

local function scale(x)
  return x * multiplier
end

local pool <close> = lmp.Pool{processes = 2, initializer = init, initargs = {10}}
for _, value in ipairs(pool:map(scale, {1, 2, 3})) do
  print(value)
end
