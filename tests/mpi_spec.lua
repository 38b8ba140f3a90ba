-- The MPI transport: the same scripts under `mpiexec -n 4 lmp`, rank 0
-- running the script and ranks 1 to 3 serving as pool workers. Needs a
-- build with MPI=1 ($LMP_MPI_BUILD, made by `make test` where Open MPI is
-- installed) and mpiexec; skipped with a message otherwise.
local helpers = require "helpers"

local build = os.getenv("LMP_MPI_BUILD")
local runner = build and build .. "/bin/lmp"
local usable = runner and io.open(runner) ~= nil and os.execute("command -v mpiexec >/dev/null")

-- Open MPI refuses to run as root unless told twice; CI runs as root.
local MPIEXEC = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
  .. "OMPI_MCA_rmaps_base_oversubscribe=1 timeout 120 mpiexec -n 4 --oversubscribe "

local function mpi_run(code)
  local base = os.tmpname()
  local path = base .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local status, out, err = helpers.run(MPIEXEC .. runner .. " " .. path)
  os.remove(path)
  os.remove(base)
  return status, out, err
end

local function sorted_lines(s)
  local t = {}
  for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
  table.sort(t)
  return t
end

if not usable then
  describe("mpi", function()
    it("needs an MPI build and mpiexec", function()
      print("mpi_spec: skipped (no MPI build in $LMP_MPI_BUILD or no mpiexec;"
        .. " install openmpi-bin and libopenmpi-dev: LMP_SETUP_MPI=1 make setup)")
    end)
  end)
  return
end

describe("mpi", function()
  it("runs map, imap, apply_async and an executor on the worker ranks", function()
    local status, out, err = mpi_run([[
      local lmp = require "lmp"
      print(lmp.get_start_method())
      local pool <close> = lmp.Pool()
      print(pool)
      print(table.concat(pool:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6}), " "))
      local t = {}
      for v in pool:imap(function(x) return x + 1 end, {1, 2, 3}) do t[#t + 1] = v end
      print(table.concat(t, " "))
      local got
      pool:apply_async(function(a, b) return a .. b end, {"x", "y"}, {callback = function(v) got = v end})
      pool:close(); pool:join()
      print(got)
      local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
      print(ex:submit(function(s) return #s end, "hello"):result())
      local here <close> = lmp.Pool{processes = 2, start_method = "spawn"}
      print(here:apply(function() return "local" end))
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("mpi\nlmp.Pool(3 processes, running)\n1 4 9 16 25 36\n2 3 4\nxy\n5\nlocal\n", out)
  end)

  it("fails only the task whose worker dies on a remote rank; the job goes on", function()
    local status, out, err = mpi_run([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool()
      local ok, e = pcall(pool.map, pool, function(x)
        if x == 2 then os.execute("kill -SEGV " .. require("lmp.core").getpid()) end
        return x
      end, {1, 2, 3}, 1)
      print(ok, e.kind, e.signal)
      ok, e = pcall(pool.apply, pool, function() os.exit(7) end)
      print(ok, e.kind, e.exitcode)
      print(table.concat(pool:map(function(x) return -x end, {1, 2, 3, 4}), " "))
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("false\tworker_lost\t11\nfalse\tworker_lost\t7\n-1 -2 -3 -4\n", out)
  end)

  it("ends the job with the script's error and a non-zero status", function()
    local status, _, err = mpi_run([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool()
      pool:map(function(x) return x end, {1})
      error("the script failed")
    ]])
    assert.are_not.equal(0, status)
    assert.are_not.equal(124, status)
    assert.truthy(err:find("the script failed", 1, true))
  end)

  it("keeps every rank under 1% CPU while the pool is idle", function()
    local status, out, err = mpi_run([[
      local lmp = require "lmp"
      local core = require "lmp.core"
      local pool <close> = lmp.Pool()
      pool:map(function(x) return x end, {1, 2, 3})
      local function stat(pid)
        local f = io.open("/proc/" .. pid .. "/stat")
        if not f then return nil end
        local s = f:read("a"); f:close()
        local fields = {}
        for w in s:gsub("^.*%) ", ""):gmatch("%S+") do fields[#fields + 1] = w end
        return tonumber(fields[12]) + tonumber(fields[13]), fields[2]
      end
      -- The ranks on this machine are rank 0's siblings (mpiexec's children).
      local me = core.getpid()
      local _, parent = stat(me)
      local pids = {me}
      for entry in io.popen("ls /proc"):lines() do
        local pid = tonumber(entry)
        if pid and pid ~= me and select(2, stat(pid)) == parent then pids[#pids + 1] = pid end
      end
      os.execute("sleep 1")
      local before = {}
      for i, pid in ipairs(pids) do before[i] = stat(pid) end
      os.execute("sleep 2")
      local percents = {}
      for i, pid in ipairs(pids) do
        percents[i] = ("%.1f"):format((stat(pid) - before[i]) / 2)  -- 100 ticks a second
      end
      print(#pids, table.concat(percents, " "))
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    print("\nmpi idle CPU % over 2 s (rank 0 first): " .. out:gsub("^%d+\t", ""):gsub("\n", ""))
    local n = tonumber(out:match("^(%d+)"))
    assert.equal(4, n)
    for p in out:match("\t(.*)\n"):gmatch("%S+") do assert.is_true(tonumber(p) < 1, out) end
  end)

  it("runs the examples unchanged, printing what plain lmp prints", function()
    for _, name in ipairs {"squares.lua", "starmap_add.lua", "apply.lua", "power.lua",
                           "executor_submit.lua", "count_primes.lua", "initializer.lua",
                           "imap_slow.lua", "apply_async.lua", "executor_primes.lua"} do
      local path = helpers.root .. "/examples/" .. name
      local s1, plain, e1 = helpers.run(runner .. " " .. path)
      local s2, over_mpi, e2 = helpers.run(MPIEXEC .. runner .. " " .. path)
      assert.equal(0, s1, name .. e1)
      assert.equal(0, s2, name .. e2)
      -- Callbacks and unordered results come in the order tasks finish.
      assert.same(sorted_lines(plain), sorted_lines(over_mpi), name)
    end
  end)
end)
