-- Counting primes below 50,000 in five ranges, one (low, high) pair per
-- task with starmap. Prints "Total primes: 5133".
-- Run: lmp examples/count_primes_ranges.lua
local lmp = require "lmp"

local function is_prime(n)
  if n < 2 then return false end
  for d = 2, math.floor(math.sqrt(n)) do
    if n % d == 0 then return false end
  end
  return true
end

-- Counts the primes in [low, high).
local function count_primes(low, high)
  local count = 0
  for n = low, high - 1 do
    if is_prime(n) then count = count + 1 end
  end
  return count
end

local limit, parts = 50000, 5
local ranges = {}
for i = 0, parts - 1 do
  ranges[#ranges + 1] = {i * limit // parts, (i + 1) * limit // parts}
end

local pool <close> = lmp.Pool(parts)
local total = 0
for _, count in ipairs(pool:starmap(count_primes, ranges)) do
  total = total + count
end
print("Total primes: " .. total)
