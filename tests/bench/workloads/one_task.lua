-- The whole-program start-up figure: a script that makes a pool, runs one
-- task and ends (tests/bench/workloads_bench.sh times `lmp one_task.lua`).
local lmp = require "lmp"
local pool <close> = lmp.Pool(2)
assert(pool:apply(math.abs, {-1}) == 1)
