-- Counting primes below 40,000 in four ranges with a pool of 4, one range
-- per task. Prints "Total primes found: 4203", the true count (the Python
-- tutorial this mirrors shows 4221, which no correct count gives).
-- Run: lmp examples/count_primes.lua   (or lua5.4 with the module on the path)
local lmp = require "lmp"

local function count_primes(range)
  local count = 0
  for n = range[1], range[2] - 1 do
    if n >= 2 then
      local prime = true
      for d = 2, math.floor(math.sqrt(n)) do
        if n % d == 0 then prime = false; break end
      end
      if prime then count = count + 1 end
    end
  end
  return count
end

local ranges = {{0, 10000}, {10000, 20000}, {20000, 30000}, {30000, 40000}}
local pool <close> = lmp.Pool(4)
local counts = pool:map(count_primes, ranges)
local total = 0
for i = 1, counts.n do
  print(("Primes in [%d, %d): %d"):format(ranges[i][1], ranges[i][2], counts[i]))
  total = total + counts[i]
end
print("Total primes found: " .. total)
