-- The MPI benchmark's lmp side, run on rank 0 of `mpiexec -n N lmp`: the
-- same figures through a pool on the N - 1 worker ranks and, in the same
-- run, through a local pool of the same size. Prints one line per figure.
local lmp = require "lmp"
local core = require "lmp.core"

local function work(n)
  local s = 0
  for i = 1, n do s = (s + i * i) % 1000003 end
  return s
end

local function cpu_map(pool, workers)
  local items = {}
  for i = 1, workers * 8 do items[i] = 2000000 + i end
  local t = core.hrtime()
  pool:map(work, items, 1)
  return core.hrtime() - t
end

local function round_trip(pool)
  local n = 2000
  pool:apply(function() return 1 end)
  local t = core.hrtime()
  for _ = 1, n do pool:apply(function(x) return x end, {1}) end
  return (core.hrtime() - t) / n
end

-- Best of 3, as the map: one transfer on a shared machine is mostly noise.
local function payload(pool)
  local data = string.rep("x", 100 * 1000 * 1000)
  pool:apply(function(s) return #s end, {"warm"})
  local best = math.huge
  for _ = 1, 3 do
    local t = core.hrtime()
    local back = pool:apply(function(s) return s end, {data})
    assert(#back == #data)
    best = math.min(best, core.hrtime() - t)
  end
  return best
end

local mpi <close> = lmp.Pool()
local n = mpi.processes
local here <close> = lmp.Pool{processes = n, start_method = "spawn"}
-- Alternating, so that a noisy machine hurts both alike.
local t_mpi, t_local = math.huge, math.huge
for _ = 1, 3 do
  t_mpi = math.min(t_mpi, cpu_map(mpi, n))
  t_local = math.min(t_local, cpu_map(here, n))
end
print(("lmp %d workers: cpu map %.3f s over MPI, %.3f s local: efficiency %.2f (target >= 0.9)")
  :format(n, t_mpi, t_local, t_local / t_mpi))
print(("lmp round trip: %.1f us over MPI, %.1f us local")
  :format(round_trip(mpi) * 1e6, round_trip(here) * 1e6))
local p_mpi, p_local = payload(mpi), payload(here)
print(("lmp 100 MB there and back (best of 3): %.0f MB/s over MPI, %.0f MB/s local")
  :format(200 / p_mpi, 200 / p_local))
