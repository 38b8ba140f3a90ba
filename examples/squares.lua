-- Squares with pool:map: the Pool's "hello world". Results come back in
-- input order, as an array that carries n.
-- Run: lmp examples/squares.lua
local lmp = require "lmp"

local function square(x)
  return x * x
end

local pool <close> = lmp.Pool(4)
local squares = pool:map(square, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
print(table.concat(squares, " ", 1, squares.n))
