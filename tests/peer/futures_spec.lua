-- CPython's Lib/test/test_concurrent_futures/ (executor.py,
-- test_process_pool.py, test_future.py, test_as_completed.py,
-- test_wait.py, test_shutdown.py, test_init.py, test_deadlock.py)
-- translated to lmp's ProcessPoolExecutor. tests/peer/README.md says what
-- was ported and what differs.
local describe, it, setup, teardown, pending, assert, pcall =
  describe, it, setup, teardown, pending, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"
helpers.build_crash_module() -- tests/c/crash.c: its tasks crash on purpose
local common = require "peer.common"
local mul, pow, sleepy = common.mul, common.pow, common.sleepy

local function range(n, f)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = f and f(i) or i end
  return t
end

local function collect(iterator)
  local t = {}
  for v in iterator do t[#t + 1] = v end
  return t
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function pid_of_task() return require("lmp").current_process().pid end

-- Turns the loop a little, so that deferred callbacks run. (lmp.run()
-- would wait for every unfinished future, the gated ones included.)
local function settle() lmp.sleep(0.02) end

-- Turns the loop until ready() holds (at most 30 s).
local function eventually(ready)
  local deadline = os.time() + 30
  while not ready() do
    assert(os.time() <= deadline, "waited 30 s in vain")
    lmp.sleep(0.01)
  end
end

-- Python builds futures in each state by hand (util.py); lmp has no bare
-- Future, so they come from a one-worker executor whose worker is held
-- on a gate: RUNNING is in the worker, PENDING and CANCELLED are queued
-- behind it.
local function state_futures()
  local ex = lmp.ProcessPoolExecutor{max_workers = 1}
  local gate = common.gate()
  local s = {executor = ex, gate = gate}
  s.SUCCESSFUL = ex:submit(function() return 42 end)
  s.EXCEPTION = ex:submit(function() error("OSError", 0) end)
  s.SUCCESSFUL:result()
  s.EXCEPTION:exception()
  s.RUNNING = ex:submit(common.wait_gate, gate.shm)
  local queued = {}
  for _ = 1, 10 do -- the pool sends a worker more than one task ahead
    local f = ex:submit(common.wait_gate, gate.shm)
    queued[#queued + 1] = f
    if not f:running() then break end
  end
  s.PENDING = queued[#queued]
  s.CANCELLED = ex:submit(common.wait_gate, gate.shm)
  assert(s.CANCELLED:cancel())
  s.CANCELLED_AND_NOTIFIED = s.CANCELLED -- one state in lmp
  assert(s.RUNNING:running() and not s.PENDING:running(), "state futures not as planned")
  function s.release()
    gate:open()
    s.RUNNING:result(30)
    for _, f in ipairs(queued) do f:result(30) end
    ex:shutdown()
    gate:close()
  end
  return s
end

-- ---- executor.py: ExecutorTest, for the process pool ------------------------

describe("peer: ExecutorTest", function()
  local ex
  setup(function() ex = lmp.ProcessPoolExecutor{max_workers = 5} end)
  teardown(function()
    ex:shutdown{wait = true}
    assert.is_true(helpers.no_children(5))
  end)

  it("test_submit", function()
    assert.equal(256, ex:submit(pow, 2, 8):result())
  end)

  it("test_map", function()
    local expected = range(10, function(i) return pow(i, i) end)
    assert.same(expected, collect(ex:map(pow, range(10), range(10))))
    assert.same(expected, collect(ex:map(pow, range(10), range(10), {chunksize = 3})))
  end)

  it("test_map_exception", function()
    local function divmod(a, b) return {a // b, a % b} end
    local next_result = ex:map(divmod, {1, 1, 1, 1}, {2, 3, 0, 5})
    assert.same({0, 1}, next_result())
    assert.same({0, 1}, next_result())
    local ok, err = pcall(next_result)
    assert.is_false(ok)
    assert.equal("task", err.kind)
    assert.matches("divide by zero", err.message)
  end)

  it("test_map_timeout (scaled: 0.5 s timeout, a 3 s task)", function()
    local results = {}
    local ok, err = pcall(function()
      for v in ex:map(sleepy, {1, 2, 3}, {0, 0, 3}, {timeout = 0.5}) do results[#results + 1] = v end
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.same({1, 2}, results)
  end)

  it("test_shutdown_race_issue12456", function()
    local e = lmp.ProcessPoolExecutor{max_workers = 2}
    e:map(tostring, range(3, function() return 2 end))
    e:shutdown()
  end)

  it("test_no_stale_references: a discarded future does not keep its function alive", function()
    local weak = setmetatable({}, {__mode = "k"})
    do
      local object = {}
      weak[object] = true
      ex:submit(function() return object ~= nil end)
    end
    local collected = false
    for _ = 1, 100 do
      ex:submit(mul, 1, 1):result()
      collectgarbage(); collectgarbage()
      if next(weak) == nil then collected = true; break end
    end
    assert.is_true(collected)
  end)

  it("test_max_workers_negative", function()
    for _, n in ipairs{0, -1} do
      local ok, err = pcall(lmp.ProcessPoolExecutor, {max_workers = n})
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'ProcessPoolExecutor' %(max_workers must be", err)
    end
  end)

  -- A result handed out is the caller's alone: the iterator keeps none.
  it("test_free_reference: the iterator keeps no result it handed out", function()
    local next_result = ex:map(function() return {} end, range(10))
    for _ = 1, 10 do
      local weak = setmetatable({[next_result()] = true}, {__mode = "k"})
      collectgarbage(); collectgarbage()
      assert.is_nil(next(weak))
    end
  end)
end)

-- ---- test_process_pool.py ------------------------------------------------------

describe("peer: ProcessPoolExecutorTest", function()
  teardown(function() assert.is_true(helpers.no_children(5)) end)

  -- Python breaks the whole pool when a worker dies (BrokenProcessPool:
  -- every pending future fails, every later submit raises). lmp fails
  -- only what the dead worker held, replaces it and goes on.
  it("test_killed_child: only the dead worker's future fails; the executor goes on (differs)", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local gate <close> = common.gate()
    local f = ex:submit(common.wait_gate, gate.shm)
    local victim = ex:submit(pid_of_task)
    local pid = common.children()[1]
    eventually(function() return f:running() end)
    os.execute("kill -KILL " .. pid)
    local ok, err = pcall(f.result, f, 30)
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
    gate:open()
    local _ = victim:exception(30) -- sent ahead to the dead worker or run by the new one
    assert.equal(256, ex:submit(pow, 2, 8):result(30))
    gate:close()
  end)

  it("test_broken_process_pool_traceback: each failed future has an error of its own", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
    local gate <close> = common.gate()
    local futures = {ex:submit(common.wait_gate, gate.shm), ex:submit(common.wait_gate, gate.shm)}
    eventually(function() return futures[1]:running() and futures[2]:running() end)
    lmp.sleep(0.05)
    os.execute("kill -KILL " .. table.concat(common.children(), " "))
    local errors = {}
    for i, f in ipairs(futures) do
      local ok, err = pcall(f.result, f, 30)
      assert.is_false(ok)
      assert.equal("worker_lost", err.kind)
      errors[i] = err
    end
    assert.are_not.equal(errors[1], errors[2])
    gate:close()
  end)

  it("test_map_chunksize", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
    local expected = range(40, function(i) return pow(i, i) end)
    for _, chunksize in ipairs{6, 50, 40} do
      assert.same(expected, collect(ex:map(pow, range(40), range(40), {chunksize = chunksize})))
    end
    assert.has_error(function() collect(ex:map(pow, range(40), range(40), {chunksize = -1})) end)
  end)

  it("test_traceback: the worker's traceback arrives with the error", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local f = ex:submit(function() error({123}) end) -- some comment
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.same({123}, err.value)
    assert.matches("futures_spec.lua:%d+", err.traceback)
  end)

  it("test_traceback_when_child_process_terminates_abruptly: the error names the exit status", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local f = ex:submit(os.exit, 99)
    local ok, err = pcall(f.result, f, 30)
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
    assert.matches("99", err.message)
  end)

  it("test_saturation: many queued jobs never start more than max_workers processes", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
    local futures = {}
    for i = 1, 30 do futures[i] = ex:submit(sleepy, i, 0.001) end
    assert.equal(2, #common.children())
    for i = 1, 30 do assert.equal(i, futures[i]:result()) end
  end)

  it("test_max_tasks_per_child", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1, max_tasks_per_child = 3}
    local original = ex:submit(pid_of_task):result()
    assert.equal(original, ex:submit(pid_of_task):result())
    assert.equal(original, ex:submit(pid_of_task):result())
    local new_pid = ex:submit(pid_of_task):result()
    assert.are_not.equal(original, new_pid)
    -- The retired worker is gone once it has been reaped.
    eventually(function() return #common.children() == 1 end)
  end)

  it("test_max_tasks_per_child_pending_tasks_gh115634", function()
    for _, case in ipairs{{1, 2, 6}, {2, 2, 8}} do
      local ex <close> = lmp.ProcessPoolExecutor{max_workers = case[1], max_tasks_per_child = case[2]}
      local futures = {}
      for i = 0, case[3] - 1 do futures[#futures + 1] = ex:submit(mul, i, 2) end
      for i, f in ipairs(futures) do assert.equal((i - 1) * 2, f:result(30)) end
    end
  end)

  it("test_shutdown_no_wait_max_tasks_gh119592: queued work finishes after shutdown{wait = false}", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 1, max_tasks_per_child = 1}
    local futures = {}
    for i = 0, 2 do futures[#futures + 1] = ex:submit(sleepy, i, 0.05) end
    ex:shutdown{wait = false}
    for i, f in ipairs(futures) do assert.equal(i - 1, f:result(30)) end
    ex:shutdown{wait = true}
  end)

  it("test_max_tasks_early_shutdown", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 3, max_tasks_per_child = 1}
    local futures = {}
    for i = 0, 5 do futures[#futures + 1] = ex:submit(mul, i, i) end
    ex:shutdown()
    for i, f in ipairs(futures) do assert.equal((i - 1) * (i - 1), f:result()) end
  end)
end)

-- ---- test_future.py --------------------------------------------------------------

describe("peer: FutureTests", function()
  local s, ex
  setup(function()
    s = state_futures()
    ex = lmp.ProcessPoolExecutor{max_workers = 2}
  end)
  teardown(function()
    s.release()
    ex:shutdown()
    assert.is_true(helpers.no_children(5))
  end)

  it("test_done_callback_with_result", function()
    local result
    local f = ex:submit(sleepy, 5, 0.05)
    f:add_done_callback(function(fut) result = fut:result() end)
    f:result()
    settle()
    assert.equal(5, result)
  end)

  it("test_done_callback_with_exception", function()
    local exception
    local f = ex:submit(function() require("lmp").sleep(0.05); error("test", 0) end)
    f:add_done_callback(function(fut) exception = fut:exception() end)
    f:exception()
    settle()
    assert.equal("test", exception.value)
  end)

  -- As Python's, cancel() runs the callbacks before it returns.
  it("test_done_callback_with_cancel", function()
    local e <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local g <close> = common.gate()
    local blockers = {e:submit(common.wait_gate, g.shm), e:submit(common.wait_gate, g.shm)}
    local f = e:submit(sleepy, 1)
    local was_cancelled
    f:add_done_callback(function(fut) was_cancelled = fut:cancelled() end)
    assert.is_true(f:cancel())
    -- Python runs it inside cancel(); here it runs only once something
    -- turns the loop, which a script under plain lua5.4 may never do.
    assert.is_true(was_cancelled)
    g:open()
    for _, b in ipairs(blockers) do b:result(30) end
    g:close()
  end)

  it("test_done_callback_raises: the error is reported, the next callback runs", function()
    local reported, raising_was_called, fn_was_called = {}, false, false
    lmp.on_error(function(err) reported[#reported + 1] = tostring(err) end)
    local f = ex:submit(sleepy, 5, 0.05)
    f:add_done_callback(function() raising_was_called = true; error("doh!") end)
    f:add_done_callback(function() fn_was_called = true end)
    f:result()
    settle()
    lmp.on_error(nil)
    assert.is_true(raising_was_called)
    assert.is_true(fn_was_called)
    assert.matches("doh!", reported[1])
  end)

  it("test_done_callback_already_successful", function()
    local result
    s.SUCCESSFUL:add_done_callback(function(fut) result = fut:result() end)
    settle()
    assert.equal(42, result)
  end)

  it("test_done_callback_already_failed", function()
    local exception
    s.EXCEPTION:add_done_callback(function(fut) exception = fut:exception() end)
    settle()
    assert.equal("OSError", exception.value)
  end)

  it("test_done_callback_already_cancelled", function()
    local was_cancelled
    s.CANCELLED:add_done_callback(function(fut) was_cancelled = fut:cancelled() end)
    settle()
    assert.is_true(was_cancelled)
  end)

  -- The callback's error is reported (lmp.on_error), not raised into the
  -- caller of add_done_callback.
  it("test_done_callback_raises_already_succeeded", function()
    local reported = {}
    lmp.on_error(function(err) reported[#reported + 1] = tostring(err) end)
    local ok = pcall(s.SUCCESSFUL.add_done_callback, s.SUCCESSFUL, function() error("doh!") end)
    settle()
    lmp.on_error(nil)
    assert.is_true(ok)
    assert.matches("doh!", reported[1])
  end)

  it("test_repr", function()
    assert.equal("lmp.Future(pending)", tostring(s.PENDING))
    assert.equal("lmp.Future(running)", tostring(s.RUNNING))
    assert.equal("lmp.Future(cancelled)", tostring(s.CANCELLED))
    assert.equal("lmp.Future(finished)", tostring(s.EXCEPTION))
    assert.equal("lmp.Future(finished)", tostring(s.SUCCESSFUL))
  end)

  it("test_cancel", function()
    local e <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local g <close> = common.gate()
    local f2 = e:submit(common.wait_gate, g.shm)
    local queued = {e:submit(common.wait_gate, g.shm)}
    local f1 = e:submit(sleepy, 1)
    local f3 = e:submit(sleepy, 3)
    assert.is_true(f3:cancel())
    assert.is_true(f1:cancel())
    assert.is_true(f1:cancelled())
    assert.is_false(f2:cancel())
    assert.is_true(f2:running())
    assert.is_true(f3:cancel())
    assert.is_true(f3:cancelled())
    assert.is_false(s.EXCEPTION:cancel())
    assert.is_true(s.EXCEPTION:done() and not s.EXCEPTION:cancelled())
    assert.is_false(s.SUCCESSFUL:cancel())
    assert.equal(42, s.SUCCESSFUL:result())
    g:open()
    f2:result(30); queued[1]:result(30)
    g:close()
  end)

  it("test_cancelled", function()
    assert.is_false(s.PENDING:cancelled())
    assert.is_false(s.RUNNING:cancelled())
    assert.is_true(s.CANCELLED:cancelled())
    assert.is_false(s.EXCEPTION:cancelled())
    assert.is_false(s.SUCCESSFUL:cancelled())
  end)

  it("test_done", function()
    assert.is_false(s.PENDING:done())
    assert.is_false(s.RUNNING:done())
    assert.is_true(s.CANCELLED:done())
    assert.is_true(s.EXCEPTION:done())
    assert.is_true(s.SUCCESSFUL:done())
  end)

  it("test_running", function()
    assert.is_false(s.PENDING:running())
    assert.is_true(s.RUNNING:running())
    assert.is_false(s.CANCELLED:running())
    assert.is_false(s.EXCEPTION:running())
    assert.is_false(s.SUCCESSFUL:running())
  end)

  it("test_result_with_timeout", function()
    local function kind(f, ...) local ok, err = pcall(f.result, f, ...); assert.is_false(ok); return err.kind end
    assert.equal("timeout", kind(s.PENDING, 0))
    assert.equal("timeout", kind(s.RUNNING, 0))
    assert.equal("cancelled", kind(s.CANCELLED, 0))
    assert.equal("task", kind(s.EXCEPTION, 0))
    assert.equal(42, s.SUCCESSFUL:result(0))
  end)

  it("test_result_with_success: result waits while another coroutine lets the task finish", function()
    local g <close> = common.gate()
    local f = ex:submit(common.wait_gate, g.shm, 42)
    lmp.spawn(function() lmp.sleep(0.1); g:open() end)
    assert.equal(42, f:result(30))
    settle()
    g:close()
  end)

  it("test_result_with_cancel: result raises when another coroutine cancels the future", function()
    local e <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local g <close> = common.gate()
    local blockers = {}
    local f
    repeat
      f = e:submit(common.wait_gate, g.shm)
      blockers[#blockers + 1] = f
    until not f:running()
    blockers[#blockers] = nil
    lmp.spawn(function() lmp.sleep(0.1); f:cancel() end)
    local ok, err = pcall(f.result, f, 30)
    assert.is_false(ok)
    assert.equal("cancelled", err.kind)
    settle()
    g:open()
    for _, b in ipairs(blockers) do b:result(30) end
    g:close()
  end)

  it("test_exception_with_timeout", function()
    local function kind(f) local ok, err = pcall(f.exception, f, 0); assert.is_false(ok); return err.kind end
    assert.equal("timeout", kind(s.PENDING))
    assert.equal("timeout", kind(s.RUNNING))
    assert.equal("cancelled", kind(s.CANCELLED))
    assert.equal("OSError", s.EXCEPTION:exception(0).value)
    assert.is_nil(s.SUCCESSFUL:exception(0))
  end)

  it("test_exception_with_success", function()
    local g <close> = common.gate()
    local f = ex:submit(function(shm)
      local l = require "lmp"
      while shm:read(0, 1) ~= "\1" do l.sleep(0.002) end
      error("OSError", 0)
    end, g.shm)
    lmp.spawn(function() lmp.sleep(0.1); g:open() end)
    assert.equal("OSError", f:exception(30).value)
    settle()
    g:close()
  end)
end)

-- ---- test_as_completed.py ----------------------------------------------------------

describe("peer: AsCompletedTests", function()
  local s, ex
  setup(function()
    s = state_futures()
    ex = lmp.ProcessPoolExecutor{max_workers = 5}
  end)
  teardown(function()
    s.release()
    ex:shutdown()
    assert.is_true(helpers.no_children(5))
  end)

  it("test_no_timeout", function()
    local f1, f2 = ex:submit(mul, 2, 21), ex:submit(mul, 7, 6)
    local all = {s.CANCELLED_AND_NOTIFIED, s.EXCEPTION, s.SUCCESSFUL, f1, f2}
    assert.same(set_of(all), set_of(collect(lmp.as_completed(all))))
  end)

  it("test_future_times_out", function()
    for _, timeout in ipairs{0, 0.1} do
      local g <close> = common.gate()
      local future = ex:submit(common.wait_gate, g.shm)
      local completed = {}
      local ok, err = pcall(function()
        for f in lmp.as_completed({s.CANCELLED_AND_NOTIFIED, s.EXCEPTION, s.SUCCESSFUL, future}, timeout) do
          completed[#completed + 1] = f
        end
      end)
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
      assert.same(set_of{s.CANCELLED_AND_NOTIFIED, s.EXCEPTION, s.SUCCESSFUL}, set_of(completed))
      g:open(); future:result(30); g:close()
    end
  end)

  it("test_duplicate_futures", function()
    local f1 = ex:submit(sleepy, 1, 0.1)
    assert.equal(1, #collect(lmp.as_completed({f1, f1, f1})))
  end)

  it("test_free_reference_yielded_future: as_completed keeps no future it gave out", function()
    local futures_list = {}
    for i = 1, 8 do futures_list[i] = ex:submit(sleepy, i, 0.01 * i) end
    local next_future = lmp.as_completed(futures_list)
    -- The next future, dropped from the list at once and held weakly only
    -- (a generic for would keep it in its hidden control variable).
    local function take()
      local future = next_future()
      if future == nil then return nil end
      for i, f in ipairs(futures_list) do
        if f == future then table.remove(futures_list, i); break end
      end
      return setmetatable({[future] = true}, {__mode = "k"})
    end
    while true do
      local weak = take()
      if weak == nil then break end
      collectgarbage(); collectgarbage()
      assert.is_nil(next(weak))
    end
    assert.equal(0, #futures_list)
  end)

  it("test_correct_timeout_exception_msg", function()
    local ok, err = pcall(function()
      collect(lmp.as_completed({s.CANCELLED_AND_NOTIFIED, s.PENDING, s.RUNNING, s.SUCCESSFUL}, 0))
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.matches("2 of 4 futures unfinished", err.message)
  end)
end)

-- ---- test_wait.py ----------------------------------------------------------------------

describe("peer: WaitTests", function()
  local s, ex
  setup(function()
    s = state_futures()
    ex = lmp.ProcessPoolExecutor{max_workers = 5}
  end)
  teardown(function()
    s.release()
    ex:shutdown()
    assert.is_true(helpers.no_children(5))
  end)

  local function wait_for(futures, opts)
    local done, not_done = lmp.wait(futures, opts)
    return set_of(done), set_of(not_done)
  end

  it("test_20369: a future given twice", function()
    local future = ex:submit(mul, 1, 2)
    local done, not_done = lmp.wait({future, future}, {return_when = "ALL_COMPLETED"})
    assert.equal(future, done[1])
    assert.equal(0, #not_done)
  end)

  it("test_first_completed", function()
    local g <close> = common.gate()
    local future1 = ex:submit(mul, 21, 2)
    local future2 = ex:submit(common.wait_gate, g.shm)
    local done, not_done = wait_for({s.CANCELLED, future1, future2}, {return_when = "FIRST_COMPLETED"})
    g:open()
    -- A cancelled future is done: Python's CANCELLED (not yet notified)
    -- state has no counterpart in lmp.
    assert.is_true(done[future1] or done[s.CANCELLED])
    assert.is_true(not_done[future2])
    future2:result(30); g:close()
  end)

  it("test_first_completed_some_already_completed", function()
    local g <close> = common.gate()
    local future1 = ex:submit(common.wait_gate, g.shm)
    local done, not_done = wait_for({s.CANCELLED_AND_NOTIFIED, s.SUCCESSFUL, future1},
      {return_when = "FIRST_COMPLETED"})
    g:open()
    assert.same(set_of{s.CANCELLED_AND_NOTIFIED, s.SUCCESSFUL}, done)
    assert.same(set_of{future1}, not_done)
    future1:result(30); g:close()
  end)

  it("test_first_exception", function()
    local g1 <close> = common.gate()
    local g2 <close> = common.gate()
    local future1 = ex:submit(mul, 2, 21)
    local future2 = ex:submit(function(shm)
      local l = require "lmp"
      while shm:read(0, 1) ~= "\1" do l.sleep(0.002) end
      error("this is an exception", 0)
    end, g1.shm)
    local future3 = ex:submit(common.wait_gate, g2.shm)
    -- Python opens the first gate from a thread once future1 is done.
    lmp.spawn(function() future1:result(); g1:open() end)
    local done, not_done = wait_for({future1, future2, future3}, {return_when = "FIRST_EXCEPTION"})
    assert.same(set_of{future1, future2}, done)
    assert.same(set_of{future3}, not_done)
    g2:open(); future3:result(30)
    settle()
    g1:close(); g2:close()
  end)

  it("test_first_exception_some_already_complete", function()
    local g <close> = common.gate()
    local future1 = ex:submit(function(a, b) return a // b end, 21, 0)
    local future2 = ex:submit(common.wait_gate, g.shm)
    local done, not_done = wait_for({s.SUCCESSFUL, s.CANCELLED, future1, future2},
      {return_when = "FIRST_EXCEPTION"})
    g:open()
    assert.is_true(done[s.SUCCESSFUL] and done[future1])
    assert.is_true(not_done[future2])
    future2:result(30); g:close()
  end)

  it("test_first_exception_one_already_failed", function()
    local g <close> = common.gate()
    local future1 = ex:submit(common.wait_gate, g.shm)
    local done, not_done = wait_for({s.EXCEPTION, future1}, {return_when = "FIRST_EXCEPTION"})
    g:open()
    assert.same(set_of{s.EXCEPTION}, done)
    assert.same(set_of{future1}, not_done)
    future1:result(30); g:close()
  end)

  it("test_all_completed", function()
    local future1 = ex:submit(function(a, b) return a // b end, 2, 0)
    local future2 = ex:submit(mul, 2, 21)
    local all = {s.SUCCESSFUL, s.CANCELLED_AND_NOTIFIED, s.EXCEPTION, future1, future2}
    local done, not_done = wait_for(all, {return_when = "ALL_COMPLETED"})
    assert.same(set_of(all), done)
    assert.same({}, not_done)
  end)

  it("test_timeout", function()
    local g <close> = common.gate()
    local future = ex:submit(common.wait_gate, g.shm)
    local done, not_done = wait_for({s.CANCELLED_AND_NOTIFIED, s.EXCEPTION, s.SUCCESSFUL, future},
      {timeout = 0.05, return_when = "ALL_COMPLETED"})
    g:open()
    assert.same(set_of{s.CANCELLED_AND_NOTIFIED, s.EXCEPTION, s.SUCCESSFUL}, done)
    assert.same(set_of{future}, not_done)
    future:result(30); g:close()
  end)
end)

-- ---- test_shutdown.py ---------------------------------------------------------------------

describe("peer: ProcessPoolShutdownTest", function()
  teardown(function() assert.is_true(helpers.no_children(5)) end)

  it("test_run_after_shutdown", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 2}
    ex:shutdown()
    local ok, err = pcall(ex.submit, ex, pow, 2, 5)
    assert.is_false(ok)
    assert.equal("closed", err.kind)
    assert.matches("cannot schedule new futures after shutdown", err.message)
  end)

  it("test_interpreter_shutdown: the runner lets submitted work finish at exit", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      local t = lmp.ProcessPoolExecutor{max_workers = 5}
      t:submit(function(seconds, message)
        require("lmp").sleep(seconds); print(message); io.stdout:flush()
      end, 0.2, "apple")
    ]], helpers.runner)
    assert.equal(0, status, err)
    assert.equal("", err)
    assert.equal("apple\n", out)
  end)

  it("test_hang_issue12364", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 5}
    local futures = {}
    for i = 1, 20 do futures[i] = ex:submit(sleepy, i, 0.01) end
    ex:shutdown()
    for i, f in ipairs(futures) do assert.equal(i, f:result()) end
  end)

  it("test_cancel_futures", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 2}
    local futures = {}
    for i = 1, 50 do futures[i] = ex:submit(sleepy, i, 0.02) end
    ex:shutdown{cancel_futures = true}
    local cancelled, others = 0, 0
    for _, f in ipairs(futures) do
      if f:cancelled() then
        cancelled = cancelled + 1
      else
        others = others + 1
        assert.is_true(f:done())
        assert.is_nil(f:exception())
      end
    end
    assert.is_true(cancelled > 20)
    assert.is_true(others > 0)
  end)

  it("test_hang_gh83386: shutdown{wait = false} does not hang the runner at exit", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      local t = lmp.ProcessPoolExecutor{max_workers = 3}
      t:submit(function(seconds, message)
        require("lmp").sleep(seconds); print(message); io.stdout:flush()
      end, 0.2, "apple")
      t:shutdown{wait = false}
    ]], helpers.runner)
    assert.equal(0, status, err)
    assert.equal("apple\n", out)
  end)

  it("test_hang_gh94440: shutdown after a submit that was cancelled at once", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 1}
    ex:submit(function() return 0 end):result()
    ex:submit(function() return 0 end):cancel()
    ex:shutdown{wait = true}
  end)

  it("test_processes_terminate: shutdown leaves no worker", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 5}
    for i = 1, 3 do ex:submit(sleepy, i, 0.05) end
    ex:shutdown()
    assert.is_true(helpers.no_children(5))
  end)

  it("test_context_manager_shutdown", function()
    do
      local e <close> = lmp.ProcessPoolExecutor{max_workers = 5}
      assert.same({5, 4, 3, 2, 1, 0, 1, 2, 3, 4},
        collect(e:map(math.abs, {-5, -4, -3, -2, -1, 0, 1, 2, 3, 4})))
    end
    assert.is_true(helpers.no_children(5))
  end)

  it("test_del_shutdown: results survive the executor being dropped", function()
    local inputs = {-5, -4, -3, -2, -1, 0, 1, 2, 3, 4}
    local results
    do
      local e = lmp.ProcessPoolExecutor{max_workers = 5}
      results = e:map(math.abs, inputs)
    end
    collectgarbage(); collectgarbage()
    for _, v in ipairs(inputs) do assert.equal(math.abs(v), results()) end
    results = nil -- luacheck: ignore
    collectgarbage(); collectgarbage()
    assert.is_true(helpers.no_children(5))
  end)

  it("test_shutdown_no_wait: results are all computed after shutdown{wait = false}", function()
    local inputs = {-5, -4, -3, -2, -1, 0, 1, 2, 3, 4}
    local e = lmp.ProcessPoolExecutor{max_workers = 5}
    local results = e:map(math.abs, inputs)
    e:shutdown{wait = false}
    for _, v in ipairs(inputs) do assert.equal(math.abs(v), results()) end
    e:shutdown{wait = true}
  end)

  for _, workers in ipairs{2, 4} do
    it(("test_shutdown_gh_132969 (%d workers)"):format(workers), function()
      local e = lmp.ProcessPoolExecutor{max_workers = workers, max_tasks_per_child = 1}
      local function good(n) require("lmp").sleep(0.02 * n); return n end
      local f1 = e:submit(good, 1)
      local f2 = e:submit(function() error("failing task") end)
      local f3 = e:submit(good, 3)
      local result = 0
      pcall(function()
        result = result + f1:result()
        result = result + f2:result()
        result = result + f3:result()
      end)
      e:shutdown{wait = false}
      assert.equal(1, result)
      e:shutdown{wait = true}
    end)
  end
end)

-- ---- test_init.py ------------------------------------------------------------------------------

describe("peer: InitializerTest", function()
  -- What the initializer sets wins over the script's globals that travel
  -- with the tasks.
  it("test_initializer", function()
    INITIALIZER_STATUS = "uninitialized"
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2,
      initializer = function(x) INITIALIZER_STATUS = x end, initargs = {"initialized"}}
    local futures = {}
    for i = 1, 2 do futures[i] = ex:submit(function() return INITIALIZER_STATUS end) end
    for _, f in ipairs(futures) do assert.equal("initialized", f:result()) end
    INITIALIZER_STATUS = nil
  end)

  -- Python's executor breaks once a worker's initializer fails (futures
  -- fail, later submits raise BrokenExecutor). lmp fails the creation
  -- itself, at once, with kind "initializer".
  it("test_initializer (failing): creation raises kind initializer (differs)", function()
    local ok, err = pcall(lmp.ProcessPoolExecutor, {max_workers = 2,
      initializer = function() require("lmp").sleep(0.1); error("error in initializer") end})
    assert.is_false(ok)
    assert.equal("initializer", err.kind)
    assert.matches("error in initializer", tostring(err))
    assert.is_true(helpers.no_children(5))
  end)
end)

-- ---- test_deadlock.py: ExecutorDeadlockTest ------------------------------------------------------

describe("peer: ExecutorDeadlockTest", function()
  teardown(function() assert.is_true(helpers.no_children(5)) end)

  -- Values whose encoding or decoding misbehaves, as Python's
  -- CrashAtPickle, ExitAtUnpickle, ErrorAtPickle...: userdata whose
  -- __lmp_serialize misbehaves, or names a constructor that does (the
  -- constructor runs where the value arrives; workers register theirs in
  -- the initializer).
  local function register_constructors()
    local l = require "lmp"
    l.register("peer.exit_at_load", function() os.exit(1) end)
    l.register("peer.error_at_load", function() error("error at load", 0) end)
    l.register("peer.crash_at_load", function() require("crash").segfault() end)
  end
  local function misbehaving(serialize)
    return require("crash").userdata({__lmp_serialize = serialize})
  end
  local function at_load(name)
    return misbehaving(function() return name, {} end)
  end

  -- expected: a kind, or a set of kinds that are all acceptable.
  local function check_error(expected, fn, ...)
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2, initializer = register_constructors}
    local ok, err = pcall(function(...) return ex:submit(fn, ...):result(60) end, ...)
    assert.is_false(ok)
    if type(expected) == "table" then
      assert.is_true(expected[err.kind] or false, "unexpected kind " .. tostring(err.kind))
    else
      assert.equal(expected, err.kind)
    end
    assert.equal(4, ex:submit(mul, 2, 2):result(60)) -- the executor still works
    return err
  end

  local function identity(x) return x ~= nil end

  -- Python's future fails with the PicklingError; lmp encodes at submit,
  -- so submit raises the serializer's own error and nothing is sent.
  it("test_error_at_task_pickle: submit raises the serializer's error (differs: at once)", function()
    local bad = misbehaving(function() error("Error in pickle", 0) end)
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
    local ok, err = pcall(ex.submit, ex, identity, bad)
    assert.is_false(ok)
    assert.matches("Error in pickle", tostring(err))
    assert.equal(4, ex:submit(mul, 2, 2):result(60))
  end)

  it("test_exit_at_task_unpickle", function()
    check_error("worker_lost", identity, at_load("peer.exit_at_load"))
  end)

  -- Python breaks the pool (BrokenProcessPool); lmp loses the worker
  -- that could not decode its task, fails that task and goes on.
  it("test_error_at_task_unpickle: the task fails, the executor goes on", function()
    check_error({task = true, worker_lost = true}, identity, at_load("peer.error_at_load"))
  end)

  it("test_crash_at_task_unpickle", function()
    local err = check_error("worker_lost", identity, at_load("peer.crash_at_load"))
    assert.matches("SIGSEGV", err.message)
  end)

  it("test_crash_during_func_exec_on_worker", function()
    check_error("worker_lost", function() require("crash").segfault() end)
  end)

  -- Python's sys.exit raises SystemExit, which travels back as the task's
  -- exception; Lua's os.exit ends the process: the worker is lost.
  it("test_exit_during_func_exec_on_worker: os.exit loses the worker (differs)", function()
    check_error("worker_lost", function() os.exit(1) end)
  end)

  it("test_error_during_func_exec_on_worker", function()
    check_error("task", function() error("RuntimeError") end)
  end)

  it("test_crash_during_result_pickle_on_worker", function()
    check_error("worker_lost", function()
      return require("crash").userdata({__lmp_serialize = function() require("crash").segfault() end})
    end)
  end)

  it("test_exit_during_result_pickle_on_worker", function()
    check_error("worker_lost", function()
      return require("crash").userdata({__lmp_serialize = function() os.exit(1) end})
    end)
  end)

  -- The task fails with kind serialize and its worker lives on.
  it("test_error_during_result_pickle_on_worker: the task fails with kind serialize", function()
    check_error("serialize", function()
      return require("crash").userdata({__lmp_serialize = function() error("Error in pickle") end})
    end)
  end)

  -- Python fails the future (BrokenProcessPool); lmp fails that task
  -- alone with kind serialize, and the executor goes on.
  it("test_error_during_result_unpickle_in_result_handler: the future fails with kind serialize", function()
    lmp.register("peer.error_at_result_load", function() error("error at load", 0) end)
    local err = check_error("serialize", function()
      return require("crash").userdata({__lmp_serialize = function() return "peer.error_at_result_load", {} end})
    end)
    assert.matches("error at load", tostring(err))
  end)

  it("test_shutdown_deadlock: a worker crashing after shutdown fails its future", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 2}
    local f = ex:submit(function() require("lmp").sleep(0.1); require("crash").segfault() end)
    ex:shutdown{wait = true}
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
  end)

  it("test_crash_big_data: workers crashing with big arguments in flight", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
    local data = ("a"):rep(1024 * 1024)
    local items = {}
    for i = 1, 10 do items[i] = data end
    local ok, err = pcall(collect, ex:map(function() require("crash").segfault() end, items))
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
  end)

  it("test_gh105829_should_not_deadlock_if_wakeup_pipe_full: 100 quick jobs", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
    assert.equal(100, #collect(ex:map(math.tointeger, range(100))))
  end)
end)
