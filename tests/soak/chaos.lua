-- The chaos soak: N small tasks while a random worker is killed every 50 ms.
-- Every task must be accounted for exactly once, as its correct result or
-- as a worker_lost error, with no process or file descriptor left over.
-- Run: LUA_PATH="tests/?.lua;;" build/bin/lmp tests/soak/chaos.lua [tasks=100000] [processes=4]
local lmp = require "lmp"
local core = require "lmp.core"

local n = tonumber(arg[1]) or 100000
local processes = tonumber(arg[2]) or 4

-- The descriptors are counted in this process, not by a listing process
-- (io.popen("ls")): popen closes its end of the child's pipe only after
-- the child has started, so a loaded machine sometimes lets the listing
-- see that end too, and the count is one too many.
local open_fds = require("helpers").open_fds

-- A first pool makes libuv's own descriptors (epoll, signal pipe), which
-- live as long as the loop: count from after it.
do
  local warm <close> = lmp.Pool(1)
end
local fds_before = open_fds()
local started = core.hrtime()
local pool = lmp.Pool(processes)
local seen, results, lost, wrong = {}, 0, 0, 0
local batch = 1000
local submitted = 0

local function account(i) seen[i] = (seen[i] or 0) + 1 end

-- Submitting in batches keeps memory flat; each batch goes out as the
-- previous one drains.
local function submit_batch()
  for _ = 1, batch do
    if submitted == n then return end
    submitted = submitted + 1
    local i = submitted
    pool:apply_async(function(x) return x * 2 end, {i}, {
      callback = function(v)
        if v == i * 2 then results = results + 1 else wrong = wrong + 1 end
        account(i)
      end,
      error_callback = function(e)
        if e.kind == "worker_lost" then lost = lost + 1 else wrong = wrong + 1 end
        account(i)
      end,
    })
  end
end

local kills = 0
local killer = core.timer(0.05, function()
  local w = pool.workers[math.random(#pool.workers)]
  if w and w.ready then core.kill(w.pid, 9); kills = kills + 1 end
end, 0.05)

while submitted < n do
  submit_batch()
  while submitted - (results + lost + wrong) > batch do lmp.sleep(0.001) end
end
lmp.run()
killer:close()
pool:close()
pool:join()

local missing, repeated = 0, 0
for i = 1, n do
  if seen[i] == nil then missing = missing + 1 elseif seen[i] > 1 then repeated = repeated + 1 end
end
local fds_after = open_fds()
print(("%d tasks in %.1f s with %d workers killed: %d results, %d worker_lost, "
  .. "%d wrong, %d missing, %d repeated; fds %d -> %d")
  :format(n, core.hrtime() - started, kills, results, lost, wrong, missing, repeated,
          fds_before, fds_after))
local ok = wrong == 0 and missing == 0 and repeated == 0 and fds_after == fds_before
print(ok and "chaos soak: PASS" or "chaos soak: FAIL")
os.exit(ok and 0 or 1)
