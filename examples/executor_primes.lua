-- Prime counting with ProcessPoolExecutor.map: the numbers below 40,000 in
-- four ranges, one range per task. (The Python material prints 4221 for
-- this; the true count, printed here, is 4203.)
local lmp = require "lmp"

local function count_primes(low, high)
  local count = 0
  for n = math.max(low, 2), high - 1 do
    local prime = true
    for d = 2, math.floor(math.sqrt(n)) do
      if n % d == 0 then prime = false; break end
    end
    if prime then count = count + 1 end
  end
  return count
end

local executor <close> = lmp.ProcessPoolExecutor{max_workers = 4}
local lows, highs = {0, 10000, 20000, 30000}, {10000, 20000, 30000, 40000}
local total = 0
for count in executor:map(count_primes, lows, highs) do total = total + count end
print("Total primes found: " .. total)
