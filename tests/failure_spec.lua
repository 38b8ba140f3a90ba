-- Failures are values, never hangs (docs/reference.md, "Errors"): each test causes the
-- fault and checks what the user gets, then that nothing is left behind.
local describe, it, setup, teardown, after_each, assert, pcall =
  describe, it, setup, teardown, after_each, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"
helpers.build_crash_module() -- tests/c/crash.c: its tasks crash on purpose

local busy = helpers.busy
local wait_for, alive = helpers.wait_for, helpers.alive

describe("worker death", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("SIGKILL from outside fails only the task it held, names the signal, and is replaced", function()
    local results, handles = {}, {}
    local victim
    local path, started = helpers.start_signal()
    local touch = helpers.touch
    for i = 1, 6 do
      handles[i] = pool:apply_async(function(x)
        if x == 1 then touch(path); busy(0.5) end
        return x
      end, {i}, {
        callback = function(v) results[i] = v end,
        error_callback = function(e) results[i] = e end,
      })
    end
    -- The worker running item 1 is busy for a while: kill it then (once
    -- it runs it: a task it was sent but never read runs elsewhere).
    assert.is_true(started())
    assert.is_true(wait_for(function()
      for _, w in ipairs(pool.workers) do
        if w.inflight[1] and w.inflight[1].job == handles[1].job then victim = w.pid end
      end
      return victim ~= nil
    end))
    core.kill(victim, 9)
    lmp.run()
    assert.equal("worker_lost", results[1].kind)
    assert.matches("killed by signal 9 %(SIGKILL%)", results[1].message)
    assert.equal(victim, results[1].pid)
    for i = 2, 6 do assert.equal(i, results[i]) end
    assert.equal(2, #pool.workers)
    assert.same({2, 4, n = 2}, pool:map(function(x) return x * 2 end, {1, 2}))
  end)

  it("a death by any signal names it, from the system's own list (SIGUSR1, SIGXCPU)", function()
    for _, name in ipairs{"SIGUSR1", "SIGXCPU"} do
      local pid = pool:apply(function() return core.getpid() end)
      local path, started = helpers.start_signal()
      local touch = helpers.touch
      local r = pool:apply_async(function() touch(path); busy(30) end)
      assert.is_true(started())
      assert.is_true(os.execute(("kill -s %s %d"):format(name:sub(4), pid)))
      local ok, err = pcall(r.get, r, 30)
      assert.is_false(ok)
      assert.equal("worker_lost", err.kind)
      assert.matches(("killed by signal %d %%(%s%%)"):format(core.signals[name], name), err.message)
    end
  end)

  it("os.exit in a task is reported with its status, and map raises it", function()
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 2 then os.exit(7) end
      return x
    end, {1, 2, 3, 4}, 1)
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
    assert.equal(2, err.index)
    assert.matches("exited with status 7", err.message)
    assert.same({1, 2, 3, n = 3}, pool:map(function(x) return x end, {1, 2, 3}))
  end)

  it("a segfault in a C module fails that task with SIGSEGV", function()
    local ok, err = pcall(pool.apply, pool, function() require("crash").segfault() end, {})
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
    assert.matches("signal 11 %(SIGSEGV%)", err.message)
    assert.equal(42, pool:apply(function() return 42 end, {}))
  end)

  it("a result whose constructor raises in the main process fails that task with kind serialize", function()
    lmp.register("failure_spec.bad_constructor", function() error("error at load", 0) end)
    local function make()
      return require("crash").userdata({__lmp_serialize = function()
        return "failure_spec.bad_constructor", {} end})
    end
    local calls = {
      apply = function() return pool:apply(make, {}) end,
      map = function() return pool:map(function() return make() end, {1, 2}) end,
      imap = function() for _ in pool:imap(function() return make() end, {1, 2}) do end end,
    }
    for how, call in pairs(calls) do
      local ok, err = pcall(call)
      assert.is_false(ok, how)
      assert.equal("serialize", err.kind, how)
      assert.matches("cannot be loaded in the main process: error at load", err.message)
    end
    assert.equal(5, pool:apply(function() return 5 end, {}))
  end)

  it("imap and imap_unordered deliver the failure for that item alone", function()
    for _, method in ipairs{"imap", "imap_unordered"} do
      local good, failures = 0, {}
      local it = pool[method](pool, function(x)
        if x == 3 then os.exit(1) end
        return x
      end, {1, 2, 3, 4, 5}, 1)
      while true do
        local ok, v = pcall(it)
        if ok and v == nil then break end
        if ok then good = good + 1 else failures[#failures + 1] = v end
      end
      assert.equal(4, good)
      assert.equal(1, #failures)
      assert.equal("worker_lost", failures[1].kind)
      assert.equal(3, failures[1].index)
    end
  end)
end)

describe("restart storms", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("an initializer that raises fails pool creation with kind initializer", function()
    local t0 = core.hrtime()
    local ok, err = pcall(lmp.Pool, {processes = 2, initializer = function()
      error("no config file")
    end})
    assert.is_false(ok)
    assert.equal("initializer", err.kind)
    assert.matches("no config file", err.message)
    assert.is_true(core.hrtime() - t0 < 5)
  end)

  -- Creates a pool whose workers are `worker`; returns what pool creation printed.
  local function pool_with_worker(worker, runner)
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local ok, err = pcall(lmp.Pool, 2)
      print(ok, err.kind, err.message)
    ]], "LMP_WORKER=" .. worker .. " " .. (runner or "lua5.4"))
    assert.equal(0, status)
    return out
  end

  it("workers that keep dying at start fail the pool after a few tries", function()
    assert.matches("^false\tworker_lost\tworkers keep dying at start", pool_with_worker("/bin/false"))
  end)

  it("a missing worker executable fails pool creation clearly", function()
    assert.matches("cannot start worker '/nonexistent/lmp%-worker'",
      pool_with_worker("/nonexistent/lmp-worker"))
  end)

  it("$LMP_WORKER overrides the worker the lmp runner sets for itself", function()
    assert.matches("cannot start worker '/nonexistent/lmp%-worker'",
      pool_with_worker("/nonexistent/lmp-worker", helpers.runner))
  end)
end)

describe("timeouts", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("apply_async with a timeout fails the task, kills and replaces its worker", function()
    local before = {pool.workers[1].pid, pool.workers[2].pid}
    local r = pool:apply_async(function() busy(30) end, {}, {timeout = 0.2})
    local t0 = core.hrtime()
    local ok, err = pcall(r.get, r)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.is_true(core.hrtime() - t0 < 5)
    assert.is_true(wait_for(function() return not alive(err.pid) end))
    assert.is_true(err.pid == before[1] or err.pid == before[2])
    assert.equal(7, pool:apply(function() return 7 end, {}))
    assert.equal(2, #pool.workers)
  end)

  it("the map family takes a timeout option", function()
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 2 then busy(30) end
      return x
    end, {1, 2, 3}, {chunksize = 1, timeout = 0.2})
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal(2, err.index)
  end)

  it("a pool-wide task_timeout applies to every task", function()
    local p <close> = lmp.Pool{processes = 1, task_timeout = 0.2}
    local ok, err = pcall(p.apply, p, function() busy(30) end, {})
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal(1, p:apply(function() return 1 end, {}))
  end)
end)

describe("shutdown", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("terminate during work leaves no process and no pipe", function()
    local fds = helpers.open_fds()
    local pool = lmp.Pool(2)
    pool:map_async(function() busy(30) end, {1, 2, 3, 4}, 1)
    pool:terminate()
    pool:join()
    assert.is_true(helpers.no_children())
    assert.equal(fds, helpers.open_fds())
  end)

  it("a pool collected without being closed stops its workers", function()
    local pids
    do
      local pool = lmp.Pool(2)
      pool:apply(function() return 1 end, {})
      pids = {pool.workers[1].pid, pool.workers[2].pid}
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(helpers.no_children())
    for _, pid in ipairs(pids) do assert.is_false(alive(pid)) end
  end)

  it("a script that ends with work pending leaves nothing behind", function()
    for _, runner in ipairs{"lua5.4", helpers.runner} do
      local status, out = helpers.run_lua([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        pool:map_async(function() local t = os.clock() while os.clock() - t < 30 do end end,
                       {1, 2, 3, 4}, 1)
        local f = io.open(os.getenv("PIDS"), "w")
        for _, w in ipairs(pool.workers) do f:write(w.pid, "\n") end
        f:close()
        pool:terminate()
      ]], "PIDS=/tmp/lmp_pids_" .. core.getpid() .. " " .. runner)
      assert.equal(0, status)
      for pid in io.lines("/tmp/lmp_pids_" .. core.getpid()) do
        assert.is_false(alive(tonumber(pid)), "worker " .. pid .. " outlived its script")
      end
    end
    os.remove("/tmp/lmp_pids_" .. core.getpid())
  end)

  it("workers exit within a second when the main process is killed", function()
    local pidfile = "/tmp/lmp_parent_" .. core.getpid()
    os.execute(([[
      LUA_PATH='%s' LUA_CPATH='%s' PIDS=%s lua5.4 -e '
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        local f = io.open(os.getenv("PIDS"), "w")
        f:write(require("lmp.core").getpid(), "\n")
        for _, w in ipairs(pool.workers) do f:write(w.pid, "\n") end
        f:close()
        pool:map(function() local t = os.clock() while os.clock() - t < 30 do end end, {1, 2}, 1)
      ' >/dev/null 2>&1 &]]):format(package.path, package.cpath, pidfile))
    local pids
    assert.is_true(wait_for(function()
      pids = {}
      for line in (helpers.read_file(pidfile) or ""):gmatch("%d+") do
        pids[#pids + 1] = tonumber(line)
      end
      return #pids == 3
    end, 10))
    core.kill(pids[1], 9)
    local t0 = core.hrtime()
    assert.is_true(wait_for(function() return not alive(pids[2]) and not alive(pids[3]) end, 1))
    assert.is_true(core.hrtime() - t0 < 1)
    os.remove(pidfile)
  end)
end)

describe("Ctrl-C", function()
  local function interrupt(runner, main_busy)
    -- os.tmpname makes the file it names: removed with the script.
    local base = os.tmpname()
    local script = base .. ".lua"
    local f = io.open(script, "w")
    f:write([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(2)
      local f = io.open(os.getenv("PIDS"), "w")
      for _, w in ipairs(pool.workers) do f:write(w.pid, "\n") end
      f:close()
    ]] .. (main_busy and [[
      local t = os.clock() while os.clock() - t < 30 do end
    ]] or [[
      pool:map(function() local t = os.clock() while os.clock() - t < 30 do end end, {1, 2, 3, 4}, 1)
    ]]))
    f:close()
    local pidfile, outfile = os.tmpname(), os.tmpname()
    os.remove(pidfile)
    -- A new session, so that the signal reaches exactly this process group.
    os.execute(("PIDS=%s setsid sh -c '%s %s 2>%s; echo $? >>%s' &")
      :format(pidfile, runner, script, outfile, outfile))
    local pids = {}
    assert.is_true(wait_for(function()
      pids = {}
      for line in (helpers.read_file(pidfile) or ""):gmatch("%d+") do
        pids[#pids + 1] = tonumber(line)
      end
      return #pids == 2
    end, 10))
    lmp.sleep(0.2)
    -- The process group of the workers is the script's.
    local stat = helpers.read_file("/proc/" .. pids[1] .. "/stat")
    local pgid = tonumber(stat:match("^%d+ %b() %a %d+ (%d+)"))
    local t0 = core.hrtime()
    core.kill(-pgid, 2)
    assert.is_true(wait_for(function()
      local out = helpers.read_file(outfile) or ""
      return out:match("%d+\n$") ~= nil
    end, 3))
    assert.is_true(core.hrtime() - t0 < 1.5)
    local out = helpers.read_file(outfile)
    os.remove(script); os.remove(base); os.remove(pidfile); os.remove(outfile)
    for _, pid in ipairs(pids) do assert.is_false(alive(pid)) end
    return out
  end

  for _, case in ipairs{{"lua5.4", false}, {"lmp", false}, {"lmp", true}} do
    it(("under %s while %s: exit 130, one message, no process left")
         :format(case[1], case[2] and "the main process computes" or "a map runs"), function()
      local runner = case[1] == "lmp" and helpers.runner or "lua5.4"
      local out = interrupt(runner, case[2])
      assert.matches("\n130\n$", out)
      local _, messages = out:gsub("interrupted", "")
      assert.equal(1, messages)
      assert.not_matches("traceback", out)
    end)
  end
end)

describe("chaos", function()
  it("every task is accounted for exactly once while workers are killed", function()
    local fds = helpers.open_fds()
    local pool = lmp.Pool(2)
    local n = 3000
    local seen, lost, wrong = {}, 0, 0
    for i = 1, n do
      -- Each task takes 0.2 ms of CPU, so that kills land among them.
      pool:apply_async(function(x) busy(0.0002); return x end, {i}, {
        callback = function(v)
          if v ~= i then wrong = wrong + 1 end
          seen[i] = (seen[i] or 0) + 1
        end,
        error_callback = function(e)
          if e.kind == "worker_lost" then lost = lost + 1 else wrong = wrong + 1 end
          seen[i] = (seen[i] or 0) + 1
        end,
      })
    end
    local kills = 0
    local killer = core.timer(0.05, function()
      local w = pool.workers[math.random(#pool.workers)]
      if w and w.ready then core.kill(w.pid, 9); kills = kills + 1 end
    end, 0.05)
    -- Never a hang: after a minute, say what the pool looks like.
    local stuck
    local watchdog = core.timer(60, function()
      local inflight = 0
      for _, w in ipairs(pool.workers) do inflight = inflight + #w.inflight end
      local count = 0
      for i = 1, n do if seen[i] then count = count + 1 end end
      stuck = ("after 60 s: %d of %d tasks answered, %d workers, %d queued, %d in flight,"
        .. " broken: %s, kills: %d"):format(count, n, #pool.workers, pool:_queued(), inflight,
        tostring(pool.broken), kills)
      pool:terminate()
    end)
    lmp.run()
    killer:close()
    watchdog:close()
    assert.is_nil(stuck)
    for i = 1, n do assert.equal(1, seen[i], "task " .. i) end
    assert.equal(0, wrong)
    assert.is_true(kills > 0)
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
    assert.equal(fds, helpers.open_fds())
  end)
end)
