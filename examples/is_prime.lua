-- Checking large numbers for primality in parallel, one number per call.
-- Run: lmp examples/is_prime.lua
local lmp = require "lmp"

local function is_prime(n)
  if n < 2 then return false end
  if n % 2 == 0 then return n == 2 end
  for d = 3, math.floor(math.sqrt(n)), 2 do
    if n % d == 0 then return false end
  end
  return true
end

local numbers = {10000019, 10000079, 10000091, 10000099}
local pool <close> = lmp.Pool(4)
local flags = pool:map(is_prime, numbers, 1)
for i = 1, flags.n do
  print(("%d is prime: %s"):format(numbers[i], flags[i]))
end
