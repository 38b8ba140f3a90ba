-- submit with three futures: each runs in a worker; result() waits for it.
local lmp = require "lmp"

local function cube(x) return x * x * x end

local executor <close> = lmp.ProcessPoolExecutor{max_workers = 3}
local futures = {executor:submit(cube, 2), executor:submit(cube, 3), executor:submit(cube, 4)}
for i, future in ipairs(futures) do
  print(("future %d: %d"):format(i, future:result()))
end
