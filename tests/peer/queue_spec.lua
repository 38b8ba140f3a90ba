-- CPython's Lib/test/_test_multiprocessing.py, the Queue tests
-- (_TestQueue), translated to lmp.Queue. tests/peer/README.md says what
-- was ported and what differs.
local describe, it, after_each, pending, assert, pcall =
  describe, it, after_each, pending, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

-- Python raises queue.Full / queue.Empty; lmp raises kinds "full" and
-- "empty".
local function gives_up(fn, q, ...)
  local ok, err = pcall(fn, q, ...)
  assert.is_false(ok)
  assert.equal((fn == q.put or fn == q.put_nowait) and "full" or "empty", err.kind)
end

describe("peer: _TestQueue", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_put", function()
    local MAXSIZE = 6
    local queue = lmp.Queue(MAXSIZE)
    local child_can_start, parent_can_continue = lmp.Event(), lmp.Event()
    local proc = lmp.Process{target = function(q, start, continue)
      start:wait()
      for _ = 1, 6 do q:get() end
      continue:set()
    end, args = {queue, child_can_start, parent_can_continue}, daemon = true}
    proc:start()
    assert.is_true(queue:empty())
    assert.is_false(queue:full())
    queue:put(1)
    queue:put(2, true)
    queue:put(3, true, nil)
    queue:put(4, false)
    queue:put(5, false, nil)
    queue:put_nowait(6)
    assert.is_false(queue:empty())
    assert.is_true(queue:full())
    -- TimingWrapper's checks: at once without block, after the timeout
    -- with one (only the lower bound: the machine may be loaded).
    local function timed(...)
      local t0 = core.hrtime()
      gives_up(...)
      return core.hrtime() - t0
    end
    local quick = helpers.instrumented and 30 or 1
    assert.is_true(timed(queue.put, queue, 7, false) < quick)
    assert.is_true(timed(queue.put, queue, 7, false, nil) < quick)
    assert.is_true(timed(queue.put_nowait, queue, 7) < quick)
    assert.is_true(timed(queue.put, queue, 7, true, 0.1) >= 0.09)
    assert.is_true(timed(queue.put, queue, 7, false, 0.2) < quick)
    assert.is_true(timed(queue.put, queue, 7, true, 0.3) >= 0.29)
    child_can_start:set()
    assert.is_true(parent_can_continue:wait(30))
    assert.is_true(queue:empty())
    assert.is_false(queue:full())
    proc:join()
    queue:close()
  end)

  it("test_get", function()
    local queue = lmp.Queue()
    local child_can_start, parent_can_continue = lmp.Event(), lmp.Event()
    local proc = lmp.Process{target = function(q, start, continue)
      start:wait()
      for i = 2, 5 do q:put(i) end
      continue:set()
    end, args = {queue, child_can_start, parent_can_continue}, daemon = true}
    proc:start()
    assert.is_true(queue:empty())
    child_can_start:set()
    assert.is_true(parent_can_continue:wait(30))
    assert.is_false(queue:empty())
    assert.equal(2, queue:get(true, nil))
    assert.equal(3, queue:get(true))
    assert.equal(4, queue:get(true, 1))
    assert.equal(5, queue:get_nowait())
    assert.is_true(queue:empty())
    gives_up(queue.get, queue, false)
    gives_up(queue.get, queue, false, nil)
    gives_up(queue.get_nowait, queue)
    gives_up(queue.get, queue, true, 0.1)
    gives_up(queue.get, queue, false, 0.1)
    proc:join()
    queue:close()
  end)

  it("test_fork: values put before and by a child arrive in order", function()
    local queue = lmp.Queue()
    for i = 0, 9 do queue:put(i) end
    local p = lmp.Process{target = function(q) for i = 10, 19 do q:put(i) end end,
                          args = {queue}, daemon = true}
    p:start()
    for i = 0, 19 do assert.equal(i, queue:get(true, 30)) end
    gives_up(queue.get, queue, false)
    p:join()
    queue:close()
  end)

  it("test_qsize", function()
    local q = lmp.Queue()
    assert.equal(0, q:qsize())
    q:put(1)
    assert.equal(1, q:qsize())
    q:put(5)
    assert.equal(2, q:qsize())
    q:get()
    assert.equal(1, q:qsize())
    q:get()
    assert.equal(0, q:qsize())
    q:close()
  end)

  it("test_timeout: get with a timeout waits that long", function()
    local q = lmp.Queue()
    local start = core.hrtime()
    gives_up(q.get, q, true, 0.2)
    assert.is_true(core.hrtime() - start >= 0.1)
    q:close()
  end)

  -- Python's put hands the value to a feeder thread, which reports the
  -- pickling error on stderr and goes on. lmp encodes in put itself: the
  -- error is raised to the caller and nothing is queued.
  it("test_queue_feeder_donot_stop_onexc: put refuses what cannot be sent, the queue goes on (differs)", function()
    local unsendable = coroutine.create(print)
    local q = lmp.Queue()
    local ok, err = pcall(q.put, q, unsendable)
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    q:put(true)
    assert.is_true(q:get(true, 30))
    q:close()
    q = lmp.Queue(1)
    ok = pcall(q.put, q, unsendable)
    assert.is_false(ok)
    q:put(true)
    assert.equal(1, q:qsize())
    assert.is_true(q:get(true, 30))
    assert.is_true(q:empty())
    q:close()
  end)

  -- Python's ValueError "is closed" is kind "closed".
  local function refused_as_closed(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    assert.equal("closed", err.kind)
    assert.matches("is closed", err.message)
  end

  it("test_closed_queue_put_get_exceptions: a closed Queue or JoinableQueue refuses put and get", function()
    for _, q in ipairs{lmp.Queue(), lmp.JoinableQueue()} do
      q:close()
      refused_as_closed(q.put, q, "foo")
      refused_as_closed(q.get, q)
    end
  end)

  -- Python's close of a queue never used does nothing (its feeder thread
  -- does not exist yet), so empty() still answers True there; lmp's
  -- close always closes this process's ends, so empty() raises kind
  -- "closed" whether the queue was used or not (differs: one rule).
  it("test_closed_queue_empty_exceptions: after close and join_thread, empty raises kind closed (differs when unused)", function()
    for _, q in ipairs{lmp.Queue(), lmp.JoinableQueue()} do
      q:close()
      q:join_thread() -- allowed, and does nothing
      refused_as_closed(q.empty, q)
    end
    for _, q in ipairs{lmp.Queue(), lmp.JoinableQueue()} do
      q:put("foo")
      q:close()
      q:join_thread()
      refused_as_closed(q.empty, q)
    end
  end)
end)

describe("peer: _TestQueue with JoinableQueue", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_task_done: join returns once four workers marked every item done", function()
    local queue = lmp.JoinableQueue()
    local workers = {}
    for i = 1, 4 do
      workers[i] = lmp.Process{target = function(q)
        while true do
          local obj = q:get()
          q:task_done()
          if obj == false then break end
          os.execute("sleep 0.01")
        end
      end, args = {queue}}
      workers[i]:start()
    end
    for i = 1, 10 do queue:put(i) end
    queue:join()
    for _ = 1, 4 do queue:put(false) end
    queue:join()
    for _, p in ipairs(workers) do p:join(); assert.equal(0, p.exitcode) end
    queue:close()
  end)
end)

describe("peer: TestSimpleQueue", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_empty: empty in the parent and in a child", function()
    local queue = lmp.SimpleQueue()
    local child_can_start, parent_can_continue = lmp.Event(), lmp.Event()
    local p = lmp.Process{target = function(q, start, continue)
      start:wait()
      -- The parent put two values.
      assert(not q:empty())
      assert(q:get() == 5 and q:get() == 6)
      assert(q:empty())
      continue:set()
    end, args = {queue, child_can_start, parent_can_continue}}
    p:start()
    assert.is_true(queue:empty())
    queue:put(5); queue:put(6)
    child_can_start:set()
    assert.is_true(parent_can_continue:wait(60))
    assert.is_true(queue:empty())
    p:join()
    assert.equal(0, p.exitcode)
    queue:close()
  end)

  it("test_close: close twice is allowed", function()
    local queue = lmp.SimpleQueue()
    queue:close()
    queue:close()
  end)
end)

describe("peer: Queue, unbounded put", function()
  -- With nobody reading, put returns at once, as Python's does (a feeder
  -- buffers); only maxsize makes put wait. Run in a child process so
  -- that a hang is seen as a timeout, not a hung suite.
  it("put on an unbounded queue with no reader returns at once, however many items", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local q = lmp.Queue()
      for i = 1, 1000 do q:put(("x"):rep(100)) end
      q:put(("y"):rep(400 * 1024))
      print(q:qsize())
      -- As in Python, a process waits at exit until what it put is
      -- written, unless it says it need not.
      q:cancel_join_thread()
      os.exit(0)
    ]], "timeout 10 lua5.4")
    assert.equal(0, status)
    assert.equal("1001\n", out)
  end)
end)
