-- What the main process spends per task and per item, counted in Lua VM
-- instructions (a count hook): apply_async's path through the pool, and an
-- imap's per-item step, which a C iterator takes (runtime/cursor.c); and
-- what a worker's task loop spends per task, counted in the worker; and
-- for apply_async the calls it makes (C functions included) and the
-- fields it reads through a metatable (each a second table lookup).
-- Counts, not times, so that a loaded machine cannot fail them; the
-- bounds sit between the figures before and after the work that cut them
-- (apply_async: 487 VM instructions before, about 360 after, 345 after
-- the next round; 25.7 calls a task before that round, 20 after; 22
-- lookups through a metatable before it, 9 after (the method calls, and
-- the defaults an apply job keeps in its metatable to stay small: 15
-- fields a settled job before, 8 after, which halved its table); imap:
-- about 30 VM instructions a result before, 4 after, the loop's own
-- included). tests/bench/overhead.lua counts machine instructions.
local describe, it, setup, teardown, assert = describe, it, setup, teardown, assert
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"
local protocol = require "lmp.protocol"

local function identity(x) return x end

-- The Lua VM instructions fn runs on this thread, callbacks of the loop
-- it turns included.
local function instructions(fn)
  local count = 0
  debug.sethook(function() count = count + 1 end, "", 1)
  local ok, err = pcall(fn)
  debug.sethook()
  assert(ok, err)
  return count
end

describe("per-task overhead", function()
  local pool
  setup(function()
    pool = lmp.Pool(2)
    pool:map(identity, {1, 2, 3, 4})
  end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("a burst of apply_async runs under 380 VM instructions a task in the main process", function()
    local N = 3000
    local results = {}
    local count = instructions(function()
      for i = 1, N do results[i] = pool:apply_async(identity, {i}) end
      for i = 1, N do results[i]:wait() end
    end)
    for i = 1, N do assert.equal(i, results[i]:get()) end
    assert.is_true(count / N < 380, ("%.0f VM instructions a task"):format(count / N))
  end)

  it("a burst of apply_async makes under 22 calls a task in the main process, C functions included",
     function()
    local N = 3000
    local results = {}
    local calls = 0
    debug.sethook(function() calls = calls + 1 end, "c")
    local ok, err = pcall(function()
      for i = 1, N do results[i] = pool:apply_async(identity, {i}) end
      for i = 1, N do results[i]:wait() end
    end)
    debug.sethook()
    assert(ok, err)
    for i = 1, N do assert.equal(i, results[i]:get()) end
    assert.is_true(calls / N < 22, ("%.1f calls a task"):format(calls / N))
  end)

  it("a burst of apply_async reads its fields from the tables that hold them: under 10 lookups "
     .. "a task through a metatable (the method calls, an apply job's defaults)", function()
    -- Every field read that misses its table (a nil field, or a method)
    -- looks in the metatable's __index: counted by making those functions
    -- for the time of the burst.
    local Job = require("lmp.job").Job
    local Pool = require("lmp.scheduler").Pool
    local misses = 0
    local function counting(class)
      return function(_, key)
        misses = misses + 1
        return class[key]
      end
    end
    local N = 3000
    local results = {}
    Job.__index, Pool.__index = counting(Job), counting(Pool)
    local ok, err = pcall(function()
      for i = 1, N do results[i] = pool:apply_async(identity, {i}) end
      for i = 1, N do results[i]:wait() end
    end)
    Job.__index, Pool.__index = Job, Pool
    assert(ok, err)
    for i = 1, N do assert.equal(i, results[i]:get()) end
    assert.is_true(misses / N < 10, ("%.1f lookups through a metatable a task"):format(misses / N))
  end)

  it("an apply_async's job, answered, holds at most 8 fields: the main process keeps one table "
     .. "of 8 slots a task", function()
    -- A burst keeps thousands of jobs as long as their caller holds them;
    -- a table of 16 slots was most of the memory a task took, and malloc
    -- and its page faults most of the main process's time (perf).
    local results = {}
    for i = 1, 100 do results[i] = pool:apply_async(identity, {i}) end
    for i = 1, 100 do
      assert.equal(i, results[i]:get())
      local fields = 0
      for _ in next, results[i] do fields = fields + 1 end
      assert.is_true(fields <= 8, fields .. " fields")
    end
  end)

  it("a worker's task loop runs an apply in under 115 VM instructions, the task's own included",
     function()
    -- Counted in the worker: a task sets a count hook on the worker's
    -- thread, which stays set for the tasks after it, and a last task
    -- takes it down and returns the count (134 before the loop kept what
    -- it uses in locals, read each frame with one call and took a usual
    -- task's fields without its message table; 102 after).
    local one <close> = lmp.Pool(1)
    for i = 1, 50 do one:apply(identity, {i}) end
    one:apply(function()
      _G.vm_instructions = 0
      debug.sethook(function() _G.vm_instructions = _G.vm_instructions + 1 end, "", 1)
    end)
    local N = 1000
    for i = 1, N do assert.equal(i, one:apply(identity, {i})) end
    local count = one:apply(function()
      debug.sethook()
      return _G.vm_instructions
    end)
    assert.is_true(count / N < 115, ("%.1f VM instructions a task"):format(count / N))
  end)

  it("imap hands out a result in under 10 VM instructions, the loop's own included", function()
    local N = 20000
    local items = {}
    for i = 1, N do items[i] = i end
    local seen, sum = 0, 0
    local count = instructions(function()
      for v in pool:imap(identity, items) do
        seen = seen + 1
        sum = sum + v
      end
    end)
    assert.equal(N, seen)
    assert.equal(N * (N + 1) // 2, sum)
    assert.is_true(count / N < 10, ("%.1f VM instructions a result"):format(count / N))
  end)

  it("an imap chunk answered with its id alone counts as no time for the chunk sizes", function()
    -- A chunk that ran under protocol.QUICK is answered with its id alone;
    -- counted as the time the main process saw (the round trip, up to
    -- QUICK), a one-item chunk would hold the next ones to a few hundred
    -- items (CHUNK_TIME / QUICK).
    local tasks = {}
    local send = pool._send
    pool._send = function(self, w, task)
      tasks[#tasks + 1] = task
      return send(self, w, task)
    end
    local items = {}
    for i = 1, 5000 do items[i] = i end
    local ok, err = pcall(function()
      for _ in pool:imap(identity, items) do end
    end)
    pool._send = nil
    assert(ok, err)
    local quick = 0
    for _, task in ipairs(tasks) do
      assert.is_number(task.took)
      assert.is_true(task.took == 0 or task.took >= protocol.QUICK,
        ("a chunk of %d items counted as %g s"):format(task.count, task.took))
      if task.took == 0 then quick = quick + 1 end
    end
    assert.is_true(quick > 0)
  end)

  it("a worker killed from outside during a burst of apply_async: one answer each, the rest run", function()
    -- The answers of such a burst take the short path in _on_message; a
    -- worker killed -9 by another process at a moment of its choosing
    -- fails the task it was running as worker_lost, and the tasks behind
    -- it run elsewhere.
    local N = 20000
    local victim = pool.workers[1].pid
    local results = {}
    for i = 1, N do results[i] = pool:apply_async(identity, {i}) end
    assert(os.execute(("(sleep 0.03; kill -9 %d) &"):format(victim)))
    local lost = 0
    for i = 1, N do
      local ok, v = pcall(results[i].get, results[i], 60)
      if ok then
        assert.equal(i, v)
      else
        assert.equal("worker_lost", v.kind)
        assert.equal(victim, v.pid)
        lost = lost + 1
      end
    end
    assert.is_true(lost <= 1, lost .. " tasks lost")
    assert.is_true(helpers.wait_for(function()
      local replaced = #pool.workers == 2
      for _, w in ipairs(pool.workers) do replaced = replaced and w.pid ~= victim end
      return replaced
    end, 30))
    assert.equal(7, pool:apply(identity, {7}))
  end)

  it("imap inside lmp.spawn waits for its chunks by yielding through the C iterator", function()
    local got, other = {}, 0
    lmp.spawn(function()
      for v, i in pool:imap(function(x) lmp.sleep(0.002); return x * 2 end, {1, 2, 3, 4, 5, 6}) do
        got[i] = v
      end
    end)
    lmp.spawn(function()
      for _ = 1, 3 do
        other = other + 1
        lmp.sleep(0.001)
      end
    end)
    lmp.run()
    assert.same({2, 4, 6, 8, 10, 12}, got)
    assert.equal(3, other)
  end)
end)

-- How the main process waits for answers (runtime/loop.c, watch_for_answer):
-- it watches for a moment before it sleeps while answers come quickly, and
-- sleeps at once while they come milliseconds apart, where each watch
-- would only yield the CPU for a time slice and leave the workers' answers
-- waiting. Counted in the main process's loop, not timed.
describe("waiting for answers", function()
  local pool, core
  setup(function()
    core = require "lmp.core"
    pool = lmp.Pool(1)
    pool:apply(identity, {1})
  end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("a map of tasks of milliseconds, one a chunk: the main process watches for an answer at most"
     .. " a few times before it sleeps for one", function()
    local items = {}
    for i = 1, 30 do items[i] = i end
    local watched = core.watch_counts()
    local results = pool:map(function(x) lmp.sleep(0.002); return x end, items, 1)
    for i = 1, 30 do assert.equal(i, results[i]) end
    local watches = core.watch_counts() - watched
    assert.is_true(watches <= 5, ("%d of 30 answers watched for"):format(watches))
  end)

  -- After the map above, which turned watching off. (A loaded machine
  -- makes round trips longer than a watch, which turns it off again: the
  -- bound is low. Under valgrind no round trip is that quick.)
  it("a run of quick round trips (apply): the main process watches for answers again", function()
    local watched = core.watch_counts()
    for i = 1, 200 do assert.equal(i, pool:apply(identity, {i})) end
    local watches = core.watch_counts() - watched
    if not helpers.instrumented then
      assert.is_true(watches >= 20, ("%d of 200 answers watched for"):format(watches))
    end
  end)
end)
