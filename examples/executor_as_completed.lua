-- as_completed gives futures in the order they finish, not the order they
-- were submitted: the task that sleeps least comes first.
local lmp = require "lmp"

-- Sleeps by the wall clock, so the order holds however busy the machine
-- is (three workers spinning on two cores would share them unevenly).
local function nap(name, seconds)
  require("lmp").sleep(seconds)
  return name, seconds
end

local executor <close> = lmp.ProcessPoolExecutor{max_workers = 3}
local futures = {
  executor:submit(nap, "slow", 0.6),
  executor:submit(nap, "medium", 0.3),
  executor:submit(nap, "fast", 0.05),
}
for future in lmp.as_completed(futures) do
  local name, seconds = future:result()
  print(("%s finished (%.2f s)"):format(name, seconds))
end
