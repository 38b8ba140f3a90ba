-- The main process's cost per task, for an instruction counter: one
-- workload of N tasks or items, nothing timed, nothing printed. Run it
-- under callgrind with N and with 0 (the pool's start and end alone); the
-- difference over N is the cost of one:
--   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
--     build/bin/lmp tests/bench/overhead.lua async 20000   (then 0)
-- Workloads:
--   async N   N apply_async(f, {1}), then a wait on each
--   apply N   N apply(f, {1}), one after the other
--   imap N    a loop over pool:imap(f, items) of N items, no chunksize
--   map N     pool:map(f, items) of N items
-- (lmp's workers are other processes: callgrind, not told to trace
-- children, counts the main process only.) A worker's cost per task is
-- counted the same way under tools/callgrind-worker.sh, which writes one
-- file per worker; sum the workers' totals of each run:
--   LMP_SPIN_US=0 LMP_WORKER=$PWD/tools/callgrind-worker.sh \
--     LMP_CALLGRIND_OUT=build/cg-N build/bin/lmp tests/bench/overhead.lua apply 2000
--   (then 0 with build/cg-0; callgrind_annotate FILE | grep TOTALS)
-- A task that runs longer than protocol.QUICK is answered with a table,
-- not its bare id; under callgrind some do: raise QUICK in both builds
-- when comparing two.
local lmp = require "lmp"

local workload, N = arg[1], tonumber(arg[2] or "")
if not (workload == "async" or workload == "apply" or workload == "imap" or workload == "map")
   or not N then
  io.stderr:write("usage: lmp tests/bench/overhead.lua async|apply|imap|map N\n")
  os.exit(2)
end

local function identity(x) return x end
local pool <close> = lmp.Pool(2)
pool:map(identity, {1, 2, 3, 4})
local items = {}
if workload == "imap" or workload == "map" then
  for i = 1, N do items[i] = i end
end
collectgarbage()
if workload == "async" then
  local results = {}
  for i = 1, N do results[i] = pool:apply_async(identity, {1}) end
  for i = 1, N do results[i]:wait() end
elseif workload == "apply" then
  for _ = 1, N do pool:apply(identity, {1}) end
elseif workload == "imap" then
  local count = 0
  for _ in pool:imap(identity, items) do count = count + 1 end
  assert(count == N)
else
  assert(pool:map(identity, items).n == N)
end
