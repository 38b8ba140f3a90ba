-- imap over a slow task, two items per task (chunksize 2): results arrive
-- one by one, in input order, as soon as each is ready.
-- Run: lmp examples/imap_slow.lua
local lmp = require "lmp"

-- A slow task: it sleeps a moment in its worker.
local function slow_square(x)
  require("lmp").sleep(0.05)
  return x * x
end

local pool <close> = lmp.Pool(2)
for square, i in pool:imap(slow_square, {1, 2, 3, 4, 5, 6, 7, 8}, 2) do
  print(("result %d: %d"):format(i, square))
end
