-- How lmp.JoinableQueue.join and a bounded lmp.Queue.put wait
-- (docs/reference.md, "Processes"): asleep in the kernel until another
-- process changes the queue, never on a timer; with timeouts, Ctrl-C, a
-- consumer that dies, and in pool workers that got the queue.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

-- The calling thread's voluntary context switches so far: each time it
-- went to sleep. A wait that polls every few milliseconds sleeps hundreds
-- of times a second; one that sleeps until woken, a handful.
local function sleeps()
  local pid = core.getpid()
  local status = helpers.read_file(("/proc/%d/task/%d/status"):format(pid, pid))
  return tonumber(status:match("voluntary_ctxt_switches:%s*(%d+)"))
end

-- How a call failed: the error's kind, or "ok".
local function kind_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return "ok" end
  return type(err) == "table" and err.kind or tostring(err)
end

describe("JoinableQueue.join sleeps until the last task_done", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("wakes the main process soon after task_done in another process, without polling", function()
    local q, stamp = lmp.JoinableQueue(), lmp.Array("d", 1)
    q:put("work")
    local p = lmp.Process{target = function(q, stamp)
      q:get()
      lmp.sleep(1) -- join is asleep meanwhile
      stamp[1] = require("lmp.core").hrtime()
      q:task_done()
    end, args = {q, stamp}}
    p:start()
    local before = sleeps()
    assert.is_true(q:join(60))
    local woke, slept = core.hrtime(), sleeps() - before
    p:join()
    assert.equal(0, p.exitcode)
    assert.is_true(stamp[1] > 0)
    -- A wait that polled (every 5 ms at most) slept ~200 times in that
    -- second; a sleep on the counter a few times (the liveness checks
    -- and the child's own messages on the loop).
    assert.is_true(slept < 60, "join slept " .. slept .. " times in one second")
    assert.is_true(woke - stamp[1] < 1, "join woke " .. (woke - stamp[1]) .. " s late")
    q:close()
  end)

  it("in a child, join sleeps too, and returns false at its timeout", function()
    local q, out = lmp.JoinableQueue(), lmp.Queue()
    q:put("work")
    local p = lmp.Process{target = function(q, out)
      local status = "/proc/self/status"
      local function count()
        local f = io.open(status); local s = f:read("a"); f:close()
        return tonumber(s:match("voluntary_ctxt_switches:%s*(%d+)"))
      end
      local t0 = require("lmp.core").hrtime()
      local first = q:join(0.3)
      local waited = require("lmp.core").hrtime() - t0
      out:put({first, waited})
      local before = count()
      local second = q:join(60)
      out:put({second, count() - before})
    end, args = {q, out}}
    p:start()
    local first = out:get(true, 60)
    assert.is_false(first[1])
    assert.is_true(first[2] >= 0.29)
    lmp.sleep(1)
    assert.equal("work", q:get())
    q:task_done()
    local second = out:get(true, 60)
    p:join()
    assert.is_true(second[1])
    assert.is_true(second[2] < 60, "the child's join slept " .. second[2] .. " times")
    q:close(); out:close()
  end)

  it("Ctrl-C interrupts the main process waiting in join", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local q = lmp.JoinableQueue()
      q:put("never done")
      local p = lmp.Process{target = function() lmp.sleep(60) end}
      p:start()
      io.write("waiting\n"); io.flush()
      q:join()
    ]], helpers.ctrl_c_when_waiting)
    assert.equal(0, status)
    assert.matches("status 130", out)
  end)
end)

describe("a bounded Queue.put waits for room", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("blocks until another process gets, asleep meanwhile", function()
    local q, stamp = lmp.Queue(1), lmp.Array("d", 1)
    q:put("first")
    assert.is_true(q:full())
    local p = lmp.Process{target = function(q, stamp)
      lmp.sleep(1)
      stamp[1] = require("lmp.core").hrtime()
      q:get()
      assert(q:get(true, 60) == "second")
    end, args = {q, stamp}}
    p:start()
    local before = sleeps()
    q:put("second")
    local woke, slept = core.hrtime(), sleeps() - before
    assert.is_true(stamp[1] > 0 and woke >= stamp[1], "put returned before the get")
    assert.is_true(slept < 60, "put slept " .. slept .. " times in one second")
    p:join()
    assert.equal(0, p.exitcode)
    assert.equal(0, q:qsize())
    q:close()
  end)

  it("put with a timeout, and put_nowait, raise kind full; the queue goes on", function()
    local q = lmp.Queue(2)
    q:put(1); q:put_nowait(2)
    assert.equal("full", kind_of(q.put_nowait, q, 3))
    assert.equal("full", kind_of(q.put, q, 3, false))
    local t0 = core.hrtime()
    assert.equal("full", kind_of(q.put, q, 3, true, 0.3))
    assert.is_true(core.hrtime() - t0 >= 0.29)
    assert.equal(2, q:qsize())
    assert.equal(1, q:get())
    q:put(3, true, 10)
    assert.equal(2, q:get()); assert.equal(3, q:get())
    assert.equal(0, q:qsize())
    -- What cannot be sent is refused before waiting, and takes no place.
    q:put(1); q:put(2)
    assert.equal("serialize", kind_of(q.put, q, coroutine.create(print), true, 60))
    assert.equal(2, q:qsize())
    q:close()
  end)

  it("a producer blocked in put(timeout) raises full when the consumer is killed with kill -9", function()
    local q, out = lmp.Queue(1), lmp.Queue()
    local consumer = lmp.Process{target = function(q)
      q:get()
      lmp.sleep(60) -- never gets again
    end, args = {q}}
    local producer = lmp.Process{target = function(q, out)
      q:put(1); q:put(2) -- the consumer takes 1
      out:put("blocked")
      local ok, err = pcall(q.put, q, 3, true, 1.5)
      out:put(ok and "ok" or err.kind)
    end, args = {q, out}}
    consumer:start()
    producer:start()
    assert.equal("blocked", out:get(true, 60))
    os.execute("kill -9 " .. consumer.pid)
    assert.equal("full", out:get(true, 60))
    producer:join(); consumer:join()
    assert.equal(0, producer.exitcode)
    assert.equal(-9, consumer.exitcode)
    assert.equal(2, q:get(true, 10))
    q:close(); out:close()
  end)
end)

describe("queue waits in pool workers", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("a worker that got a JoinableQueue from the initializer joins until the main process is done", function()
    local q = lmp.JoinableQueue()
    local pool <close> = lmp.Pool{processes = 1,
      initializer = function(queue) _G.JQ = queue end, initargs = {q}}
    q:put("a"); q:put("b")
    local r = pool:apply_async(function() return JQ:join(60) end)
    lmp.sleep(0.3)
    assert.is_false(r:ready())
    for _ = 1, 2 do q:get(); q:task_done() end
    assert.is_true(r:get(60))
    q:close()
  end)

  it("a worker that got a bounded Queue as an argument waits for room, or raises full", function()
    local q = lmp.Queue(1)
    local pool <close> = lmp.Pool{processes = 1}
    local r = pool:apply_async(function(queue)
      queue:put("one")
      local ok, err = pcall(queue.put, queue, "two", true, 0.2)
      assert(not ok and err.kind == "full")
      queue:put("two", true, 60)
      return "put both"
    end, {q})
    lmp.sleep(0.6)
    assert.is_false(r:ready())
    assert.equal("one", q:get(true, 60))
    assert.equal("put both", r:get(60))
    assert.equal("two", q:get(true, 10))
    q:close()
  end)
end)

-- The CPU time this process (all its threads) has used so far, in seconds.
local function cpu_seconds()
  local stat = helpers.read_file("/proc/self/stat")
  local fields = {}
  for field in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = field end
  -- utime and stime, fields 14 and 15 of the whole line, in clock ticks.
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

-- In a child: takes q's read lock (as a get does while it reads a value)
-- and keeps it until released.
local function hold_read_lock(q)
  q.read_lock:acquire()
end

local function release_read_lock(q)
  q.read_lock:release()
end

describe("Queue.get waits for another process's read lock asleep", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  -- A child holds the read lock of q for about a second, then releases it
  -- and stamps the moment; returns the process (started), its stamp, and
  -- the event set once the lock is held.
  local function holder_of(q, seconds)
    local stamp, held = lmp.Array("d", 1), lmp.Event()
    local p = lmp.Process{target = function(q, stamp, held, seconds)
      hold_read_lock(q)
      held:set()
      lmp.sleep(seconds)
      stamp[1] = require("lmp.core").hrtime()
      release_read_lock(q)
    end, args = {q, stamp, held, seconds}}
    p:start()
    assert.is_true(held:wait(60))
    return p, stamp
  end

  for _, kind in ipairs{"Queue", "SimpleQueue"} do
    it(kind .. ": the main process sleeps, its loop turning, and wakes on the release", function()
      local q = lmp[kind]()
      q:put("value")
      assert.is_true(helpers.wait_for(function() return not q:empty() end, 60))
      local p, stamp = holder_of(q, 1)
      -- A timer of the main loop keeps firing while get waits.
      local ticks = 0
      lmp.spawn(function()
        while stamp[1] == 0 do ticks = ticks + 1; lmp.sleep(0.05) end
      end)
      local cpu, before = cpu_seconds(), sleeps()
      assert.equal("value", q:get())
      local woke, slept, used = core.hrtime(), sleeps() - before, cpu_seconds() - cpu
      assert.is_true(stamp[1] > 0, "get returned while the lock was held")
      assert.is_true(woke - stamp[1] < 1, "get woke " .. (woke - stamp[1]) .. " s late")
      -- A wait that spun used the whole second of CPU; one that slept, a
      -- few ticks (the loop's timer turns, the child's messages).
      assert.is_true(used < 0.3, "get used " .. used .. " s of CPU waiting one second")
      assert.is_true(ticks >= 5, "the loop's timer fired " .. ticks .. " times in one second")
      assert.is_true(slept < 200, "get slept " .. slept .. " times in one second")
      p:join()
      assert.equal(0, p.exitcode)
      q:close()
    end)
  end

  it("a get in lmp.spawn yields while the read lock is held, and gets the value after", function()
    local q = lmp.Queue()
    q:put("value")
    assert.is_true(helpers.wait_for(function() return not q:empty() end, 60))
    local p, stamp = holder_of(q, 0.5)
    local got
    lmp.spawn(function() got = q:get(true, 60) end)
    assert.is_nil(got)
    assert.is_true(helpers.wait_for(function() return got ~= nil end, 60))
    assert.equal("value", got)
    assert.is_true(stamp[1] > 0)
    p:join()
    q:close()
  end)

  it("get with a timeout raises empty while the lock stays held; get_nowait at once", function()
    local q = lmp.Queue()
    q:put("value")
    assert.is_true(helpers.wait_for(function() return not q:empty() end, 60))
    local p = holder_of(q, 1.5)
    assert.equal("empty", kind_of(q.get_nowait, q))
    local t0 = core.hrtime()
    assert.equal("empty", kind_of(q.get, q, true, 0.3))
    assert.is_true(core.hrtime() - t0 >= 0.29)
    assert.equal("value", q:get(true, 60))
    p:join()
    q:close()
  end)

  for _, kind in ipairs{"Queue", "SimpleQueue"} do
    it(kind .. ": a holder of the read lock killed with kill -9 does not wedge the queue", function()
      local q, held = lmp[kind](), lmp.Event()
      local p = lmp.Process{target = function(q, held)
        hold_read_lock(q)
        held:set()
        lmp.sleep(60)
      end, args = {q, held}}
      p:start()
      assert.is_true(held:wait(60))
      q:put("after")
      os.execute("kill -9 " .. p.pid)
      p:join()
      assert.equal(-9, p.exitcode)
      -- get_nowait does not wait, but does not take a dead holder for a
      -- live one either.
      assert.equal("after", q.get_nowait and q:get_nowait() or q:get())
      -- And a child's get, which sleeps itself, passes a dead holder too.
      local out = lmp.Queue()
      local p2 = lmp.Process{target = function(q, held)
        hold_read_lock(q)
        held:set()
        lmp.sleep(60)
      end, args = {q, held}}
      held:clear()
      p2:start()
      assert.is_true(held:wait(60))
      q:put("for the child")
      local getter = lmp.Process{target = function(q, out) out:put(q:get()) end, args = {q, out}}
      getter:start()
      os.execute("kill -9 " .. p2.pid)
      assert.equal("for the child", out:get(true, 60))
      getter:join(); p2:join()
      q:close(); out:close()
    end)
  end

  it("Ctrl-C interrupts the main process waiting in get for the read lock", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local q, held = lmp.Queue(), lmp.Event()
      q:put("value")
      local p = lmp.Process{target = function(q, held)
        q.read_lock:acquire()
        held:set()
        lmp.sleep(60)
      end, args = {q, held}}
      p:start()
      held:wait()
      io.write("waiting\n"); io.flush()
      q:get()
    ]], helpers.ctrl_c_when_waiting)
    assert.equal(0, status)
    assert.matches("status 130", out)
  end)
end)

describe("the write side of queues waits asleep too", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("SimpleQueue.put waits for another process's write lock asleep, the loop turning", function()
    local q, stamp, held = lmp.SimpleQueue(), lmp.Array("d", 1), lmp.Event()
    local p = lmp.Process{target = function(q, stamp, held)
      q.write_lock:acquire()
      held:set()
      lmp.sleep(1)
      stamp[1] = require("lmp.core").hrtime()
      q.write_lock:release()
    end, args = {q, stamp, held}}
    p:start()
    assert.is_true(held:wait(60))
    local ticks = 0
    lmp.spawn(function()
      while stamp[1] == 0 do ticks = ticks + 1; lmp.sleep(0.05) end
    end)
    local cpu = cpu_seconds()
    q:put("value")
    local used = cpu_seconds() - cpu
    assert.is_true(stamp[1] > 0, "put wrote while another process held the write lock")
    assert.is_true(used < 0.3, "put used " .. used .. " s of CPU waiting one second")
    assert.is_true(ticks >= 5, "the loop's timer fired " .. ticks .. " times in one second")
    assert.equal("value", q:get())
    p:join()
    q:close()
  end)

  it("SimpleQueue: a holder of the write lock killed with kill -9 does not wedge put", function()
    local q, held = lmp.SimpleQueue(), lmp.Event()
    local p = lmp.Process{target = function(q, held)
      q.write_lock:acquire()
      held:set()
      lmp.sleep(60)
    end, args = {q, held}}
    p:start()
    assert.is_true(held:wait(60))
    os.execute("kill -9 " .. p.pid)
    q:put("after")
    assert.equal("after", q:get())
    p:join()
    assert.equal(-9, p.exitcode)
    q:close()
  end)

  it("Queue.put returns at once while another process holds the write lock; a holder killed "
    .. "with kill -9 lets the value through", function()
    local q, held = lmp.Queue(), lmp.Event()
    local p = lmp.Process{target = function(q, held)
      -- The feeders' write lock: an fcntl lock on byte 0 of the lock file.
      require("lmp.core").fd_lock(q.lock:fileno(), 0, true)
      held:set()
      lmp.sleep(60)
    end, args = {q, held}}
    p:start()
    assert.is_true(held:wait(60))
    local t0 = core.hrtime()
    q:put("after")
    assert.is_true(core.hrtime() - t0 < 1, "put waited for the write lock")
    assert.equal("empty", kind_of(q.get, q, true, 0.2))
    os.execute("kill -9 " .. p.pid)
    assert.equal("after", q:get(true, 60))
    p:join()
    q:close()
  end)
end)
