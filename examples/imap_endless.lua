-- imap reads its input lazily, so the input may be endless: here the
-- natural numbers, until ten primes are found. Breaking out of the loop
-- abandons the rest; the pool still closes at the end of the scope.
-- Run: lmp examples/imap_endless.lua
local lmp = require "lmp"

local function prime_or_false(n)
  if n < 2 then return false end
  for d = 2, math.floor(math.sqrt(n)) do
    if n % d == 0 then return false end
  end
  return n
end

local function naturals()
  local n = 0
  return function() n = n + 1; return n end
end

local pool <close> = lmp.Pool(2)
local primes = {}
for p in pool:imap(prime_or_false, naturals()) do
  if p then primes[#primes + 1] = p end
  if #primes == 10 then break end
end
print(table.concat(primes, " "))
