-- Faults caused from outside the event loop, as the world causes them: a
-- worker killed by another process while the main process computes, a
-- worker that leaves a child behind, a channel that carries forged or
-- garbage frames. Each test checks that the pool keeps its size and that
-- every task gets exactly one answer.
local describe, it, pending, after_each, assert, pcall =
  describe, it, pending, after_each, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"
helpers.build_crash_module() -- tests/c/crash.c: its tasks crash on purpose

local busy = helpers.busy
local alive = helpers.alive
-- Faults from outside can take a while on a loaded machine.
local function wait_for(predicate, seconds) return helpers.wait_for(predicate, seconds or 10) end

-- Kills `pid` from another process (a shell), while this one does not
-- turn its loop: the pool learns of it only when it next looks.
local function kill_from_outside(pid, signal)
  assert(os.execute(("kill -%d %d"):format(signal or 9, pid)))
  local deadline = core.hrtime() + 10
  while alive(pid) and core.hrtime() < deadline do os.execute("sleep 0.01") end
end

local function worker_pids(pool)
  local pids = {}
  for _, w in ipairs(pool.workers) do pids[#pids + 1] = w.pid end
  return pids
end

describe("a worker killed from outside while the main process is busy", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("is replaced, even when it was idle: the pool keeps its size", function()
    local pool <close> = lmp.Pool(2)
    for round = 1, 3 do
      for _, pid in ipairs(worker_pids(pool)) do kill_from_outside(pid) end
      busy(0.05) -- the main process computes; its loop does not turn
      for i = 1, 4 do
        assert.equal(round * 10 + i, pool:apply(function(x) return x end, {round * 10 + i}))
      end
      assert.is_true(wait_for(function() return #pool.workers == 2 end))
    end
    local r = pool:map(function(x) return x * 2 end, {1, 2, 3, 4, 5})
    assert.same({2, 4, 6, 8, 10, n = 5}, r)
  end)

  it("with tasks in flight: each task gets its result or worker_lost, once", function()
    local pool <close> = lmp.Pool(2)
    local answers = {}
    local handles = {}
    for i = 1, 8 do
      handles[i] = pool:apply_async(function(x) local t = os.clock()
        while os.clock() - t < 0.05 do end
        return x end, {i})
    end
    lmp.sleep(0.02)
    for _, pid in ipairs(worker_pids(pool)) do kill_from_outside(pid, 11) end
    busy(0.05)
    for i = 1, 8 do
      local ok, v = pcall(handles[i].get, handles[i], 30)
      if ok then assert.equal(i, v) else assert.equal("worker_lost", v.kind) end
      answers[i] = true
    end
    assert.equal(8, #answers)
    assert.equal(5, pool:apply(function() return 5 end, {}))
    assert.equal(2, #pool.workers)
  end)
end)

-- A worker may die between two turns of the main loop: until its death is
-- seen, tasks still go into its channel, and it never reads them. Made
-- certain here: its workers are stopped (SIGSTOP, so that a task sent to
-- them goes into their channel, as to a live worker), sent tasks, then
-- killed. A task its worker never read runs on the replacement; only one
-- it read fails, as worker_lost.
describe("a task sent to a worker that was already dead", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  local function stop(pids)
    for _, pid in ipairs(pids) do assert(core.kill(pid, 19)) end -- SIGSTOP
  end

  for _, ring in ipairs{true, false} do
    local transport = ring and "ring" or "socket"
    it(("apply (%s): runs on the replacement"):format(transport), function()
      local pool <close> = lmp.Pool(2, {ring = ring})
      for round = 1, 2 do
        local pids = worker_pids(pool)
        stop(pids)
        -- Killed from another process while apply waits for its answer,
        -- which it sent into a stopped worker's channel.
        assert(os.execute(("(sleep 0.2; kill -9 %s) &"):format(table.concat(pids, " "))))
        assert.equal(round, pool:apply(function(x) return x end, {round}))
        assert.is_true(wait_for(function() return #pool.workers == 2 end))
      end
    end)
  end

  it("apply_async (small and big), map and imap chunks (ring): every one runs on the replacements", function()
    local pool <close> = lmp.Pool(2, {ring = true})
    -- Each round sends its tasks into stopped workers, then kills them.
    local function round(submit)
      local pids = worker_pids(pool)
      stop(pids)
      local collect = submit()
      -- Every worker holds tasks it never read.
      for _, w in ipairs(pool.workers) do assert.is_true(#w.inflight > 0) end
      for _, pid in ipairs(pids) do kill_from_outside(pid) end
      collect()
      assert.is_true(wait_for(function() return #pool.workers == 2 end))
    end
    round(function()
      local handles = {}
      for i = 1, 6 do handles[i] = pool:apply_async(function(x) return -x end, {i}) end
      return function()
        for i = 1, 6 do assert.equal(-i, handles[i]:get(30)) end
      end
    end)
    round(function()
      local map = pool:map_async(function(x) return x * 2 end, {1, 2, 3, 4, 5, 6, 7, 8}, 2)
      return function() assert.same({2, 4, 6, 8, 10, 12, 14, 16, n = 8}, map:get(30)) end
    end)
    -- With the default chunking, whose tail is cut from the count of
    -- items not sent yet (chunking.tail_size): items sent again to the
    -- replacements are not counted twice.
    round(function()
      local items = {}
      for i = 1, 40 do items[i] = i end
      local map = pool:map_async(function(x) return x - 1 end, items)
      return function()
        local r = map:get(30)
        for i = 1, 40 do assert.equal(i - 1, r[i]) end
        assert.equal(40, map.sent_items)
      end
    end)
    -- Frames too big for the ring go on the socket, in order with the
    -- ring's: the worker counts both.
    round(function()
      local big, handles = string.rep("x", 200000), {}
      for i = 1, 4 do handles[i] = pool:apply_async(function(s, x) return #s + x end, {big, i}) end
      return function()
        for i = 1, 4 do assert.equal(200000 + i, handles[i]:get(30)) end
      end
    end)
    round(function()
      local results = {}
      local next_value = pool:imap(function(x) return x + 100 end, {1, 2, 3, 4, 5, 6}, 2)
      return function()
        for v in next_value do results[#results + 1] = v end
        assert.same({101, 102, 103, 104, 105, 106}, results)
      end
    end)
  end)

  for _, ring in ipairs{true, false} do
    local transport = ring and "ring" or "socket"
    it(("a task the worker read (%s) still fails as worker_lost, once"):format(transport), function()
      local pool <close> = lmp.Pool(1, {ring = ring})
      local pid = worker_pids(pool)[1]
      local path, started = helpers.start_signal()
      local touch, outcomes = helpers.touch, {}
      local first = pool:apply_async(function() touch(path); busy(30) end, {}, {
        callback = function() outcomes[#outcomes + 1] = "value" end,
        error_callback = function(e) outcomes[#outcomes + 1] = e end,
      })
      local second = pool:apply_async(function(x) return x end, {2})
      assert.is_true(started())
      kill_from_outside(pid)
      local ok, err = pcall(first.get, first, 30)
      assert.is_false(ok)
      assert.equal("worker_lost", err.kind)
      assert.equal(2, second:get(30))
      lmp.sleep(0.05) -- a second outcome, were there one, would come now
      assert.equal(1, #outcomes)
      assert.equal("worker_lost", outcomes[1].kind)
    end)
  end
end)

describe("a closed pool", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("replaces a worker that dies while tasks are queued, and runs them all", function()
    local pool = lmp.Pool(2)
    -- Items 1 and 2, each worker's first, run until the kill: a slow main
    -- process (valgrind) kills after the workers finished 20 ms tasks,
    -- and a worker that finished all it was sent fails nothing. Killed
    -- once both run (each makes a file): a task a worker was only sent
    -- runs on its replacement.
    local path_1, started_1 = helpers.start_signal()
    local path_2, started_2 = helpers.start_signal()
    local touch = helpers.touch
    local r = pool:map_async(function(x)
      if x <= 2 then touch(x == 1 and path_1 or path_2) end
      local t = os.clock()
      while os.clock() - t < (x <= 2 and 20 or 0.02) do end
      return x
    end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 1)
    pool:close()
    assert.is_true(started_1())
    assert.is_true(started_2())
    for _, pid in ipairs(worker_pids(pool)) do kill_from_outside(pid) end
    busy(0.05)
    local ok, err = pcall(r.get, r, 30)
    -- The two tasks running when their workers died fail; none is lost.
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
    assert.is_true(pool:join(30))
    assert.equal(0, pool:_queued())
  end)

  it("join waits for every queued task even when all its workers die", function()
    local pool = lmp.Pool(1)
    local done = 0
    for i = 1, 6 do
      pool:apply_async(function(x) return x end, {i}, {
        callback = function() done = done + 1 end,
        error_callback = function() done = done + 1 end})
    end
    pool:close()
    kill_from_outside(pool.workers[1].pid)
    assert.is_true(pool:join(30))
    assert.equal(6, done)
    assert.equal(0, pool:_queued())
  end)
end)

describe("the outside soak (short; tests/soak/outside.lua runs it long)", function()
  -- Another process kills random workers with SIGKILL and SIGSEGV while the
  -- main process computes, waits and calls the pool.
  -- Not with a wrapped worker ($LMP_WORKER: valgrind takes seconds to
  -- start one, and the killer would keep killing workers that are starting,
  -- which a pool answers by giving up, on purpose).
  local wrapped = (os.getenv("LMP_WORKER") or "") ~= ""
  for _, case in ipairs{{"spawn", 3}, {"fork", 2}} do
    local it = wrapped and pending or it
    it(("%s workers: the pool keeps its size and every task is answered once"):format(case[1]),
      function()
        local status, out = helpers.run(("timeout 120 %s %s/tests/soak/outside.lua %d 3 %s")
          :format(helpers.runner, helpers.root, case[2], case[1]))
        assert.equal(0, status, out)
        assert.matches("outside soak: PASS", out)
      end)
  end
end)

describe("answers a worker's channel carries", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  -- Runs fn over 1..6, one item per task, on a pool of one worker; returns
  -- the outcome of each item: its value, or the error.
  local function outcomes(pool, fn)
    local got = {}
    local it = pool:imap(fn, {1, 2, 3, 4, 5, 6}, 1)
    for i = 1, 6 do
      local ok, v = pcall(it)
      got[i] = ok and v or v
    end
    return got
  end

  it("a stray well-formed answer ends the worker as worker_lost, shifting nothing", function()
    local pool <close> = lmp.Pool(1)
    local got = outcomes(pool, function(x)
      if x == 3 then require("lmp.core").channel_send(999, {n = 1, 999}, 1) end
      return x
    end)
    for _, i in ipairs{1, 2, 4, 5, 6} do assert.equal(i, got[i]) end
    assert.equal("table", type(got[3]))
    assert.equal("worker_lost", got[3].kind)
    assert.equal(3, got[3].index)
    assert.matches("killed by the pool: it sent an answer for task 999 while it was running task",
      got[3].message)
    assert.same({2, 4, n = 2}, pool:map(function(x) return 2 * x end, {1, 2}))
    assert.equal(1, #pool.workers)
  end)

  local garbage = {
    {"bytes that are no frame", "garbage!garbage!", "garbage on the channel"},
    {"a frame whose message does not decode",
     "\12\0\0\0\0\0\0\0" .. "\4\0\0\0" .. "\255\255\255\255" .. "\0\0\0\0", "a malformed message"},
  }
  for _, case in ipairs(garbage) do
    it(case[1] .. " ends the worker as worker_lost instead of hanging the job", function()
      local pool <close> = lmp.Pool(1)
      local r = pool:starmap_async(function(x, bytes)
        if x == 2 then require("crash").write(3, bytes) end
        return x
      end, {{1, case[2]}, {2, case[2]}, {3, case[2]}}, {chunksize = 1})
      local ok, err = pcall(r.get, r, 30)
      assert.is_false(ok)
      assert.equal("worker_lost", err.kind)
      assert.equal(2, err.index)
      assert.matches(case[3], err.message, 1, true)
      assert.equal(7, pool:apply(function() return 7 end, {}))
    end)
  end
end)

describe("a worker that dies leaving a child that holds its channel open", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  for _, method in ipairs{"spawn", "fork"} do
    for _, kill in ipairs{false, true} do
      it(("%s workers, kill_orphans %s: the death is reported at the exit; the child %s")
        :format(method, kill and "true" or "unset", kill and "is killed" or "is left alone"),
        function()
          local pidfile = os.tmpname()
          local pool <close> = lmp.Pool{processes = 1, start_method = method,
                                        kill_orphans = kill or nil}
          local t0 = core.hrtime()
          -- The child sleeps 60 s: before the fix the death was noticed
          -- only when it exited.
          local ok, err = pcall(pool.apply, pool, function(path)
            local crash = require "crash"
            local f = assert(io.open(path, "w"))
            f:write(crash.fork_sleeper(60))
            f:close()
            crash.segfault()
          end, {pidfile})
          local elapsed = core.hrtime() - t0
          local orphan = tonumber(helpers.read_file(pidfile))
          os.remove(pidfile)
          assert.is_false(ok)
          assert.equal("worker_lost", err.kind)
          assert.matches("SIGSEGV", err.message)
          assert.is_true(elapsed < 30, "noticed after " .. elapsed .. " s")
          assert.is_number(orphan)
          if kill then
            assert.is_true(wait_for(function() return not alive(orphan) end))
          else
            assert.is_true(alive(orphan))
            os.execute("kill -9 " .. orphan)
          end
          assert.equal(3, pool:apply(function() return 3 end, {}))
        end)
    end
  end

  it("kill_orphans must be a boolean", function()
    local ok, err = pcall(lmp.Pool, {processes = 1, kill_orphans = 1})
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'Pool' %(kill_orphans must be a boolean%)", err)
  end)
end)

describe("the runner with results nothing can deliver", function()
  it("a pool collected with work pending fails it as closed; the runner ends, never spins", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      do
        local pool = lmp.Pool(1)
        pool:apply_async(function() local t = os.clock() while os.clock() - t < 1 do end end, {},
          {callback = function() print("done") end,
           error_callback = function(e) print(e.kind, e.message) end})
      end
      collectgarbage()
      collectgarbage()
    ]], "timeout 60 " .. helpers.runner)
    assert.equal(0, status, err)
    assert.matches("^closed\tthe pool was collected before its work was done", out)
  end)
end)
