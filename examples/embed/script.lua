-- Run by examples/embed/host.c: `host` is the host's C library, present in
-- the host's Lua and, through lmp_worker_main, in every worker's.
local lmp = require "lmp"

local words = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}

local function checksum_here(word)
  local me = require("lmp").current_process()
  return {word = word, sum = host.checksum(word), name = me.name, pid = me.pid}
end

local main = lmp.current_process()
print(("host: %s pid %d"):format(main.name, main.pid))

local pool <close> = lmp.Pool(2)
local results = pool:map(checksum_here, words, 1)
for i = 1, results.n do
  local r = results[i]
  local same = r.sum == host.checksum(r.word) and "matches" or "DIFFERS from"
  print(("checksum %-8s = %10d in %s pid %d, %s the host's"):format(
    r.word, r.sum, r.name, r.pid, same))
end

-- An asynchronous call: its callback is delivered by lmp_run in the host.
pool:apply_async(checksum_here, {"omega"}, {callback = function(r)
  print(("callback: checksum %s = %d in %s pid %d"):format(r.word, r.sum, r.name, r.pid))
end})
