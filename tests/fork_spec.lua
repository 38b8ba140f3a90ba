-- The "fork" start method: workers that are copies of the main process.
-- They must behave as spawned ones do (results, failures, replacement),
-- start faster, and leave alone what they inherited from their parent.
local describe, it, setup, teardown, assert, pcall =
  describe, it, setup, teardown, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

local busy = helpers.busy

FORK_SPEC_GLOBAL = 7

describe("start method fork", function()
  local pool
  setup(function() pool = lmp.Pool{processes = 2, start_method = "fork"} end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("maps, applies and imaps, with upvalues and the script's globals", function()
    local offset = 100
    assert.same({101, 102, 103, n = 3}, pool:map(function(x) return x + offset end, {1, 2, 3}))
    assert.equal(7 * 3, pool:apply(function(x) return FORK_SPEC_GLOBAL * x end, {3}))
    local seen = 0
    for v, i in pool:imap(function(x) return x * x end, {1, 2, 3, 4}) do
      assert.equal(i * i, v)
      seen = seen + 1
    end
    assert.equal(4, seen)
  end)

  it("runs tasks in other processes that know who they are", function()
    local names = pool:map(function()
      return lmp.current_process().name .. " " .. core.getpid()
    end, {1, 2, 3, 4}, 1)
    for i = 1, names.n do
      local name, pid = names[i]:match("^(%S+) (%d+)$")
      assert.matches("^PoolWorker%-%d+$", name)
      assert.are_not.equal(core.getpid(), tonumber(pid))
    end
    assert.equal("MainProcess", lmp.current_process().name)
  end)

  it("starts no program: a worker is a copy of this process, not an lmp-worker", function()
    -- What makes fork start fast (no executable to load, no Lua to start;
    -- `make bench` times it: about a third of spawn). Timing it here would
    -- fail on a loaded machine, so the test checks the cause.
    local function cmdline(pid)
      return helpers.read_file("/proc/" .. pid .. "/cmdline")
    end
    -- Under valgrind this process reads its own command line as valgrind
    -- shows it to the program (without valgrind's own words), and another
    -- process's as it is (with them): the copy's ends with the original's.
    local forked = pool:apply(function() return core.getpid() end)
    local mine = cmdline(core.getpid())
    assert.equal(mine, cmdline(forked):sub(-#mine))
    local spawned <close> = lmp.Pool{processes = 1, start_method = "spawn"}
    local other = spawned:apply(function() return core.getpid() end)
    assert.matches(core.worker_flag, cmdline(other), 1, true)
    assert.is_nil(cmdline(forked):find(core.worker_flag, 1, true))
  end)

  it("gives pools, timers and lmp.sleep in a task a clear error", function()
    local ok, err = pcall(pool.apply, pool, function() lmp.sleep(0.01) end)
    assert.is_false(ok)
    assert.matches("not available in a worker started by fork; use start_method = 'spawn'",
      err.message)
  end)

  it("refused lmp.sleep calls cost a forked worker no memory", function()
    -- Under the sanitizers freed memory is held back (and valgrind would
    -- take minutes): there a few calls run, and the leak check judges.
    local calls = helpers.instrumented and 1000 or 100000
    local growth_kb = pool:apply(function()
      local function rss_kb()
        return tonumber(helpers.read_file("/proc/self/status"):match("VmRSS:%s*(%d+)"))
      end
      -- The first round brings the heap to the size the refusals' garbage
      -- needs; the second must not grow it (a leak grows it every round).
      for _ = 1, calls do pcall(lmp.sleep, 0.01) end
      collectgarbage()
      local before = rss_kb()
      for _ = 1, calls do pcall(lmp.sleep, 0.01) end
      collectgarbage()
      return rss_kb() - before
    end)
    -- A timer leaked per call was about 20 MB here.
    if not helpers.instrumented then assert.is_true(growth_kb < 4096, growth_kb .. " kB more") end
  end)

  it("a connection made in a forked worker refuses watch and closes cleanly", function()
    local ok, err = pool:apply(function()
      local a, b = lmp.Pipe()
      local watched, why = pcall(a.watch, a, function() end)
      a:close(); b:close()
      return watched, why
    end)
    assert.is_false(ok)
    assert.matches("not available in a worker started by fork", err)
  end)
end)

describe("start method fork, failures", function()
  teardown(function() assert.is_true(helpers.no_children()) end)

  it("a worker killed from outside fails its task with worker_lost and is replaced", function()
    local pool <close> = lmp.Pool{processes = 1, start_method = "fork"}
    helpers.check_killed_worker_is_replaced(pool, function(pid) core.kill(pid, 9) end)
  end)

  it("a task over its timeout has its worker killed and replaced", function()
    local pool <close> = lmp.Pool{processes = 1, start_method = "fork", task_timeout = 0.2}
    local ok, err = pcall(pool.apply, pool, function() busy(30) end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal(5, pool:apply(function(x) return x end, {5}))
  end)

  it("maxtasksperchild replaces forked workers without losing a task", function()
    local pool <close> = lmp.Pool{processes = 2, start_method = "fork", maxtasksperchild = 2}
    local r = pool:map(function() return core.getpid() end, {1, 2, 3, 4, 5, 6, 7, 8}, 1)
    local pids = {}
    for i = 1, r.n do pids[r[i]] = (pids[r[i]] or 0) + 1 end
    for _, count in pairs(pids) do assert.is_true(count <= 2) end
    assert.equal(8, r.n)
  end)

  it("an initializer runs in each forked worker", function()
    local pool <close> = lmp.Pool{processes = 2, start_method = "fork",
      initializer = function(x) FORK_SPEC_INIT = x end, initargs = {"ready"}}
    assert.same({"ready", "ready", n = 2},
      pool:map(function() return FORK_SPEC_INIT end, {1, 2}, 1))
  end)

  it("a worker leaves alone the parent's objects it collects (a Manager's socket)", function()
    -- Garbage in the parent, not collected there yet when the worker
    -- forks (the collector is stopped), collected in the worker.
    collectgarbage("stop")
    local path = lmp.Manager().path
    local pool <close> = lmp.Pool{processes = 1, start_method = "fork"}
    pool:apply(function() collectgarbage(); collectgarbage() end)
    local lfs = require "lfs"
    local mode = lfs.attributes(path, "mode")
    collectgarbage("restart")
    assert.equal("socket", mode, "the worker removed the parent's socket " .. path)
    collectgarbage()
    collectgarbage()
    assert.is_nil(lfs.attributes(path, "mode"))
  end)
end)

describe("start method fork, choosing it", function()
  teardown(function()
    lmp.set_start_method("spawn")
    assert.is_true(helpers.no_children())
  end)

  it("set_start_method and get_context choose it; unknown methods are refused", function()
    lmp.set_start_method("fork")
    assert.equal("fork", lmp.get_start_method())
    local pool <close> = lmp.Pool(1)
    assert.equal("fork", pool.start_method)
    lmp.set_start_method("spawn")
    local ctx = lmp.get_context("fork")
    local other <close> = ctx.Pool(1)
    assert.equal("fork", other.start_method)
    assert.equal(3, other:apply(function(x) return x + 1 end, {2}))
    local ex <close> = ctx.ProcessPoolExecutor(1)
    assert.equal(4, ex:submit(function(x) return x * 2 end, 2):result())
    assert.has_error(function() lmp.set_start_method("vfork") end)
    local ok, err = pcall(lmp.Pool, {processes = 1, start_method = "vfork"})
    assert.is_false(ok)
    assert.matches("start method 'vfork' is not supported; use 'spawn', 'fork' or 'forkserver'", err)
  end)

  it("without pidfd (old kernels, valgrind) exits are seen through SIGCHLD", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      local core = require "lmp.core"
      local pool <close> = lmp.Pool{processes = 2, start_method = "fork"}
      local pid = pool:apply(function() return core.getpid() end)
      -- Killed once it runs the task (it makes a file): a task it was
      -- only sent would run on its replacement.
      local path = os.tmpname()
      os.remove(path)
      local r = pool:apply_async(function()
        io.open(path, "w"):close()
        local t = os.clock() while os.clock() - t < 30 do end
      end)
      for _ = 1, 1000 do
        local f = io.open(path)
        if f then f:close(); break end
        lmp.sleep(0.01)
      end
      os.remove(path)
      local other = pool.workers[1].pid == pid and pool.workers[2].pid or pool.workers[1].pid
      core.kill(pid, 9)
      core.kill(other, 9)
      local ok, e = pcall(r.get, r, 10)
      print(ok, e.kind)
      -- Both deaths seen (a task sent to a worker already dead, whose
      -- death is not seen yet, fails as worker_lost: it is not what this
      -- test asks).
      local function listed()
        for _, w in ipairs(pool.workers) do
          if w.pid == pid or w.pid == other then return true end
        end
      end
      for _ = 1, 1000 do
        if not listed() then break end
        lmp.sleep(0.01)
      end
      print(pool:apply(function(x) return x * 2 end, {21}))
    ]], "LMP_NO_PIDFD=1 " .. helpers.runner)
    assert.equal(0, status, err)
    assert.equal("false\tworker_lost\n42\n", out)
  end)

  it("what the script wrote and had not flushed is written once, not once per worker", function()
    local script = os.tmpname()
    local f = io.open(script, "w")
    f:write([[
      local lmp = require "lmp"
      io.write("before the pool\n")
      local pool <close> = lmp.Pool{processes = 2, start_method = "fork"}
      pool:map(function(x) return x end, {1, 2, 3, 4}, 1)
      io.write("after\n")
    ]])
    f:close()
    local status, out = helpers.run(helpers.runner .. " " .. script .. " | cat")
    os.remove(script)
    assert.equal(0, status)
    assert.equal("before the pool\nafter\n", out)
  end)
end)

-- A pool's forked workers come from one call, core.fork_workers, which
-- forks them one right after another and then watches each one.
describe("core.fork_workers", function()
  it("forks every worker asked for, each a child of this process whose exit is seen", function()
    local exits, callbacks = {}, {}
    for i = 1, 3 do
      callbacks[2 * i - 1] = function() end
      callbacks[2 * i] = function(status, signal) exits[i] = {status, signal} end
    end
    local handles = core.fork_workers(callbacks)
    assert.equal(3, #handles)
    local seen = {}
    for _, handle in ipairs(handles) do
      local pid = handle:pid()
      assert.is_nil(seen[pid])
      seen[pid] = true
      local stat = assert(io.open(("/proc/%d/stat"):format(pid))):read("a")
      assert.equal(core.getpid(), tonumber(stat:match("^%d+ %b() %a (%d+)")))
    end
    -- One killed from outside while it waits for its configuration, the
    -- others told there is none (their input closed): each end is seen.
    assert(os.execute(("kill -9 %d"):format(handles[1]:pid())))
    handles[2]:close_input()
    handles[3]:close_input()
    assert.is_true(helpers.wait_for(function() return exits[1] and exits[2] and exits[3] end, 30))
    assert.equal(9, exits[1][2])
    assert.same({0, 0}, exits[2])
    assert.same({0, 0}, exits[3])
    assert.is_true(helpers.no_children())
  end)

  it("refuses anything but pairs of on_message and on_exit functions", function()
    local f = function() end
    assert.has_error(function() core.fork_workers({}) end)
    assert.has_error(function() core.fork_workers({f}) end)
    assert.has_error(function() core.fork_workers({f, 42}) end)
    assert.has_error(function() core.fork_workers(f) end)
    assert.is_true(helpers.no_children())
  end)

  it("a pool whose forked worker is killed while the pool starts replaces it and runs", function()
    -- This process's children that run what it runs (not the shell and
    -- ls that list them).
    local function workers_here()
      local me = core.getpid()
      local stat = assert(io.open(("/proc/%d/stat"):format(me)))
      local comm = stat:read("a"):match("^%d+ (%b())")
      stat:close()
      local found = {}
      for entry in io.popen("ls /proc"):lines() do
        local f = tonumber(entry) and io.open("/proc/" .. entry .. "/stat")
        if f then
          local c, ppid = (f:read("a") or ""):match("^%d+ (%b()) %a (%d+)")
          f:close()
          if c == comm and tonumber(ppid) == me then found[#found + 1] = tonumber(entry) end
        end
      end
      return found
    end
    -- The initializer holds every worker in its start; meanwhile a timer
    -- kills one from outside, as the world would.
    local killed
    lmp.spawn(function()
      lmp.sleep(0.1)
      killed = workers_here()[1]
      if killed then os.execute("kill -9 " .. killed) end
    end)
    local pool <close> = lmp.Pool{processes = 2, start_method = "fork",
                                  initializer = function() busy(0.5) end}
    assert.is_number(killed)
    local pids = pool:map(function() return core.getpid() end, {1, 2, 3, 4}, 1)
    for i = 1, pids.n do assert.not_equal(killed, pids[i]) end
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)
end)
