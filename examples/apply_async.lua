-- apply_async with a callback and an error callback: one call per item
-- 0..7; item 5 raises "boom". The callbacks run in the main process as
-- results arrive; the error callback receives an error object.
-- Run: lmp examples/apply_async.lua
local lmp = require "lmp"

local function task(x)
  if x == 5 then error("boom") end
  return x * x
end

local pool <close> = lmp.Pool(4)
local results = {}
for x = 0, 7 do
  results[#results + 1] = pool:apply_async(task, {x}, {
    callback = function(value) print(("result: %d"):format(value)) end,
    error_callback = function(err) print("error: " .. err.message) end,
  })
end
for _, r in ipairs(results) do r:wait() end
print("done")
