-- Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier,
-- shared with lmp.Process children, in the manner of CPython's tests: two
-- or more processes, timeouts, a holder that dies.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

-- Turns the loop until value() equals want (or 10 s pass).
local function until_equal(want, value)
  assert.is_true(helpers.wait_for(function() return value() == want end, 10),
    ("waited for %s, have %s"):format(tostring(want), tostring(value())))
end

local function kind_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return type(err) == "table" and err.kind or tostring(err)
end

describe("synchronization", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("a Lock gives one process at a time the critical section", function()
    local lock, path = lmp.Lock(), os.tmpname()
    local procs = {}
    for i = 1, 3 do
      procs[i] = lmp.Process{target = function(l, file, id)
        for _ = 1, 5 do
          l:acquire()
          local f = io.open(file, "a"); f:write("start ", id, "\n"); f:close()
          local t = os.clock() while os.clock() - t < 0.002 do end
          f = io.open(file, "a"); f:write("end ", id, "\n"); f:close()
          l:release()
        end
      end, args = {lock, path, i}}
      procs[i]:start()
    end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    local inside, lines = nil, 0
    for line in io.lines(path) do
      local what, id = line:match("^(%a+) (%d)$")
      if what == "start" then
        assert.is_nil(inside, "two processes inside at once")
        inside = id
      else
        assert.equal(inside, id)
        inside = nil
      end
      lines = lines + 1
    end
    assert.equal(30, lines)
    os.remove(path)
  end)

  it("acquire with block = false or a timeout gives up; misuse raises", function()
    local lock = lmp.Lock()
    local holder = lmp.Process{target = function(l, q)
      l:acquire(); q:put("held")
      local t = os.clock() while os.clock() - t < 0.5 do end
      l:release()
    end, args = {lock, lmp.Queue()}}
    local q = holder.args[2]
    holder:start()
    assert.equal("held", q:get())
    assert.is_true(lock:locked())
    assert.is_false(lock:acquire(false))
    assert.is_false(lock:acquire(true, 0.05))
    assert.is_true(lock:acquire(true, 10))
    lock:release()
    holder:join()
    assert.has_error(function() lock:release() end)
    lock:acquire()
    assert.has_error(function() lock:acquire() end)
    lock:release()
  end)

  it("acquire(false) on a Lock this process holds returns false (the try-lock idiom)", function()
    local lock = lmp.Lock()
    assert.is_true(lock:acquire(false))
    assert.is_false(lock:acquire(false))
    assert.is_false(lock:acquire(true, 0.05))
    -- Another coroutine of this process releases it while one waits.
    local got
    lmp.spawn(function() got = lock:acquire(true, 10) end)
    lmp.spawn(function() lmp.sleep(0.05); lock:release() end)
    lmp.run()
    assert.is_true(got)
    assert.is_true(lock:locked())
    lock:release()
    assert.is_false(lock:locked())
    assert.is_true(lock:acquire(false))
    lock:release()
  end)

  it("an RLock is re-entrant in its process", function()
    local r = lmp.RLock()
    assert.is_true(r:acquire())
    assert.is_true(r:acquire())
    r:release()
    assert.is_true(r:locked())
    r:release()
    assert.is_false(r:locked())
  end)

  it("a Semaphore counts", function()
    local s = lmp.Semaphore(2)
    assert.is_true(s:acquire())
    assert.is_true(s:acquire())
    assert.is_false(s:acquire(false))
    assert.equal(0, s:get_value())
    local p = lmp.Process{target = function(sem) sem:release() end, args = {s}}
    p:start(); p:join()
    assert.is_true(s:acquire(true, 5))
    assert.error_matches(function() lmp.Semaphore(-1) end, "bad argument #1 to 'Semaphore'")
  end)

  it("an Event set in one process wakes a waiter in another", function()
    local ev, q = lmp.Event(), lmp.Queue()
    local p = lmp.Process{target = function(e, out) out:put(e:wait(10)) end, args = {ev, q}}
    p:start()
    assert.is_false(ev:wait(0.05))
    ev:set()
    assert.is_true(ev:is_set())
    assert.is_true(q:get())
    p:join()
    ev:clear()
    assert.is_false(ev:is_set())
  end)

  it("any process may release a Lock; an RLock only its holder", function()
    local lock, rlock, q = lmp.Lock(), lmp.RLock(), lmp.Queue()
    assert.is_true(lock:acquire())
    assert.is_true(rlock:acquire())
    local p = lmp.Process{target = function(l, r, out)
      l:release()
      out:put(pcall(r.release, r))
      out:put(r:acquire(false))
    end, args = {lock, rlock, q}}
    p:start()
    assert.is_false(q:get())
    assert.is_false(q:get())
    p:join(); assert.equal(0, p.exitcode)
    assert.is_false(lock:locked())
    assert.is_true(lock:acquire(false))
    lock:release()
    assert.equal("closed", kind_of(function() lock:release() end))
    rlock:release()
    assert.is_false(rlock:locked())
  end)

  it("a Lock whose holder is killed passes to the next acquirer, which is told", function()
    for _, class in ipairs{"Lock", "RLock"} do
      local lock, held, never = lmp[class](), lmp.Event(), lmp.Event()
      local q = lmp.Queue()
      local holder = lmp.Process{target = function(l, h, n)
        l:acquire(); if getmetatable(l).__name == "lmp.RLock" then l:acquire() end
        h:set(); n:wait()
      end, args = {lock, held, never}}
      holder:start()
      assert.is_true(held:wait(10))
      -- A second process already sleeps on the lock when the holder dies.
      local waiter = lmp.Process{target = function(l, out)
        out:put(table.pack(l:acquire(true, 20)))
        l:release()
      end, args = {lock, q}}
      waiter:start()
      lmp.sleep(0.2)
      assert.is_true(lock:locked())
      -- Killed from another process, at a moment of nobody's choosing.
      os.execute("kill -9 " .. holder.pid)
      local got = q:get()
      assert.same({true, "owner_died", n = 2}, got)
      waiter:join(); assert.equal(0, waiter.exitcode)
      holder:join(); assert.equal(-9, holder.exitcode)
      -- Released by the new holder: an ordinary lock again.
      assert.same({true, n = 1}, table.pack(lock:acquire(true, 10)))
      lock:release()
      assert.is_false(lock:locked())
    end
  end)

  it("a holder killed before anyone waits: the main process gets the lock within a second", function()
    local lock, held, never = lmp.RLock(), lmp.Event(), lmp.Event()
    local holder = lmp.Process{target = function(l, h, n) l:acquire(); h:set(); n:wait() end,
      args = {lock, held, never}}
    holder:start()
    assert.is_true(held:wait(10))
    assert.is_false(lock:acquire(false))
    os.execute("kill -9 " .. holder.pid)
    holder:join()
    local ok, why = lock:acquire(true, 10)
    assert.is_true(ok)
    assert.equal("owner_died", why)
    lock:release()
    assert.is_false(lock:locked())
  end)

  -- Each lock object carries acquire and release in C bound to its cell
  -- (the fast path); the Lua methods behind them do the rest. These tests
  -- reach the fast path as users do (no arguments, or acquire(false)) and
  -- compare it with the Lua path (an extra nil argument goes there).

  it("acquire() without arguments gets a lock whose holder was killed, told owner_died", function()
    for _, class in ipairs{"Lock", "RLock"} do
      local lock, held, never, q = lmp[class](), lmp.Event(), lmp.Event(), lmp.Queue()
      local holder = lmp.Process{target = function(l, h, n) l:acquire(); h:set(); n:wait() end,
        args = {lock, held, never}}
      holder:start()
      assert.is_true(held:wait(10))
      local waiter = lmp.Process{target = function(l, out)
        out:put("waiting")
        out:put(table.pack(l:acquire()))
        l:release()
      end, args = {lock, q}}
      waiter:start()
      assert.equal("waiting", q:get())
      -- Killed by another process (kill(1)), at a moment of nobody's choosing.
      os.execute("kill -9 " .. holder.pid)
      assert.same({true, "owner_died", n = 2}, q:get())
      waiter:join(); assert.equal(0, waiter.exitcode)
      holder:join()
      assert.is_false(lock:locked())
    end
    -- The main process, through its own bound method.
    local lock, held, never = lmp.Lock(), lmp.Event(), lmp.Event()
    local holder = lmp.Process{target = function(l, h, n) l:acquire(); h:set(); n:wait() end,
      args = {lock, held, never}}
    holder:start()
    assert.is_true(held:wait(10))
    os.execute("kill -9 " .. holder.pid)
    holder:join()
    assert.same({true, "owner_died", n = 2}, table.pack(lock:acquire()))
    assert.is_false(lock:acquire(false))
    lock:release()
    assert.is_false(lock:locked())
  end)

  it("the fast try-lock and release answer as the Lua path does, in every state", function()
    local function fast_acquire(l) return pcall(l.acquire, l, false) end
    local function slow_acquire(l) return pcall(l.acquire, l, false, nil) end
    local function fast_release(l) return pcall(l.release, l) end
    local function slow_release(l) return pcall(getmetatable(l).release, l, nil) end
    -- What a call gave, errors by kind and message.
    local function outcome(...)
      local r = table.pack(...)
      if not r[1] and type(r[2]) == "table" then r[2] = r[2].kind .. ": " .. r[2].message end
      return r
    end
    local function same(l, fast, slow, undo)
      local a = outcome(fast(l)); if undo then undo(l) end
      local b = outcome(slow(l)); if undo then undo(l) end
      assert.same(a, b)
      return a
    end
    for _, class in ipairs{"Lock", "RLock"} do
      local l = lmp[class]()
      -- Free: taken.
      assert.same({true, true, n = 2}, same(l, fast_acquire, slow_acquire, l.release))
      -- Held here: a Lock is not taken again, an RLock is, and counts.
      l:acquire()
      local again = same(l, fast_acquire, slow_acquire, class == "RLock" and l.release or nil)
      assert.same({true, class == "RLock", n = 2}, again)
      l:release()
      assert.is_false(l:locked())
      -- Free: a release is refused.
      local refused = same(l, fast_release, slow_release)
      assert.is_false(refused[1])
      assert.matches("^closed: release: the lock is not", refused[2])
    end
    -- Held by another process: not taken; a Lock may be released from
    -- here (then taken back by its holder), an RLock may not.
    local lock, rlock, q, go = lmp.Lock(), lmp.RLock(), lmp.Queue(), lmp.Queue()
    local holder = lmp.Process{target = function(l, r, out, cmd)
      l:acquire(); r:acquire(); out:put("held")
      while cmd:get() == "again" do l:acquire(); out:put("held") end
      r:release()
    end, args = {lock, rlock, q, go}}
    holder:start()
    assert.equal("held", q:get())
    for _, l in ipairs{lock, rlock} do
      assert.same({true, false, n = 2}, same(l, fast_acquire, slow_acquire))
    end
    local function take_back() go:put("again"); assert.equal("held", q:get()) end
    assert.same({true, n = 1}, same(lock, fast_release, slow_release, take_back))
    local r = same(rlock, fast_release, slow_release)
    assert.same({false, "closed: release: the lock is not held by this process", n = 2}, r)
    go:put("done")
    holder:join(); assert.equal(0, holder.exitcode)
    assert.is_false(rlock:locked())
    lock:release()
  end)

  it("a coroutine waiting in acquire() yields: the loop turns until another process releases", function()
    local lock, held, go = lmp.RLock(), lmp.Event(), lmp.Event()
    local holder = lmp.Process{target = function(l, h, g) l:acquire(); h:set(); g:wait(); l:release() end,
      args = {lock, held, go}}
    holder:start()
    assert.is_true(held:wait(10))
    local got, ticks, ticks_then = nil, 0, nil
    lmp.spawn(function() got = table.pack(lock:acquire()); ticks_then = ticks end)
    lmp.spawn(function()
      while got == nil and ticks < 2000 do
        ticks = ticks + 1
        if ticks == 5 then go:set() end
        lmp.sleep(0.005)
      end
    end)
    lmp.run()
    assert.same({true, n = 1}, got)
    assert.is_true(ticks_then >= 5, "the loop did not turn while the coroutine waited")
    lock:release()
    holder:join(); assert.equal(0, holder.exitcode)
  end)

  it("a BoundedSemaphore refuses a release past its start; a Semaphore does not", function()
    local b = lmp.BoundedSemaphore(2)
    assert.equal("closed", kind_of(function() b:release() end))
    assert.is_true(b:acquire())
    local p = lmp.Process{target = function(s)
      s:release()
      local ok, err = pcall(s.release, s)
      if ok or err.kind ~= "closed" then os.exit(3) end
    end, args = {b}}
    p:start(); p:join()
    assert.equal(0, p.exitcode)
    assert.equal(2, b:get_value())
    local s = lmp.Semaphore(0)
    s:release(); s:release()
    assert.equal(2, s:get_value())
    assert.equal("lmp.BoundedSemaphore", getmetatable(b).__name)
    assert.error_matches(function() lmp.BoundedSemaphore(-1) end, "bad argument #1 to 'BoundedSemaphore'")
  end)

  it("a Semaphore wakes a process waiting in acquire when another releases", function()
    local s, q = lmp.Semaphore(0), lmp.Queue()
    local procs = {}
    for i = 1, 2 do
      procs[i] = lmp.Process{target = function(sem, out) out:put(sem:acquire(true, 20)) end,
        args = {s, q}}
      procs[i]:start()
    end
    lmp.sleep(0.1)
    s:release(); s:release()
    assert.is_true(q:get()); assert.is_true(q:get())
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    assert.equal(0, s:get_value())
    assert.is_false(s:acquire(true, 0.05))
  end)

  it("timeouts are Python's: nil waits, NaN and negative are refused", function()
    local lock, ev, s = lmp.Lock(), lmp.Event(), lmp.Semaphore(0)
    assert.error_matches(function() lock:acquire(true, 0 / 0) end, "bad argument #2 to 'acquire'")
    assert.error_matches(function() s:acquire(true, -1) end, "bad argument #2 to 'acquire'")
    assert.error_matches(function() ev:wait(0 / 0) end, "bad argument #1 to 'wait'")
    assert.is_false(ev:wait(0))
    assert.is_false(s:acquire(true, 0))
    local t = core.hrtime()
    assert.is_false(ev:wait(0.1))
    assert.is_true(core.hrtime() - t >= 0.09)
  end)

  it("the main loop turns while the main process waits on an Event", function()
    local ev = lmp.Event()
    local ticks, stop = 0, false
    lmp.spawn(function()
      while not stop do lmp.sleep(0.02); ticks = ticks + 1 end
    end)
    local p = lmp.Process{target = function(e)
      local t = require("lmp.core").hrtime()
      while require("lmp.core").hrtime() - t < 0.2 do end
      e:set()
    end, args = {ev}}
    p:start()
    assert.is_true(ev:wait(10))
    stop = true
    p:join()
    -- The child took at least 200 ms to set it; the timer turned meanwhile.
    assert.is_true(ticks >= 3, "the loop turned " .. ticks .. " times")
    -- Inside lmp.spawn a wait yields: two coroutines wait side by side.
    ev:clear()
    local woke = {}
    for i = 1, 2 do lmp.spawn(function() woke[i] = ev:wait(10) end) end
    p = lmp.Process{target = function(e) e:set() end, args = {ev}}
    p:start()
    lmp.run()
    p:join()
    assert.same({true, true}, woke)
  end)

  it("an Event set in a child wakes the main process quickly (prints the median)", function()
    local go, done, stamp = lmp.Event(), lmp.Event(), lmp.Value("d", 0)
    local rounds = 150
    local p = lmp.Process{target = function(g, d, s, n)
      local hrtime = require("lmp.core").hrtime
      for _ = 1, n do
        g:wait(); g:clear()
        s.value = hrtime()
        d:set()
      end
    end, args = {go, done, stamp, rounds}}
    p:start()
    local latencies = {}
    for i = 1, rounds do
      done:clear()
      go:set()
      assert.is_true(done:wait(10))
      -- The first rounds wake CPUs from idle: counted from round 51.
      if i > 50 then latencies[#latencies + 1] = core.hrtime() - stamp.value end
    end
    p:join()
    table.sort(latencies)
    local median = latencies[#latencies // 2]
    io.stderr:write(("\n# Event set in a child to the main process awake: median %.1f us, "
      .. "90th %.1f us\n"):format(median * 1e6, latencies[#latencies * 9 // 10] * 1e6))
    -- Loose, for a loaded machine: the point is that nothing polls.
    assert.is_true(median < 0.005, "median " .. median)
  end)

  it("Condition notify wakes one waiting process, notify_all the rest", function()
    local cond, ready, woken, q = lmp.Condition(), lmp.Value("i", 0), lmp.Value("i", 0), lmp.Queue()
    local procs = {}
    for i = 1, 3 do
      procs[i] = lmp.Process{target = function(c, r, w, out)
        c:acquire()
        r.value = r.value + 1
        local ok = c:wait(20)
        w.value = w.value + 1
        c:release()
        out:put(ok)
      end, args = {cond, ready, woken, q}}
      procs[i]:start()
    end
    until_equal(3, function() return ready.value end)
    -- Each registered before it let the lock go: holding it, all three wait.
    cond:acquire()
    cond:notify()
    cond:release()
    until_equal(1, function() return woken.value end)
    lmp.sleep(0.2)
    assert.equal(1, woken.value)
    cond:acquire(); cond:notify_all(); cond:release()
    until_equal(3, function() return woken.value end)
    for _ = 1, 3 do assert.is_true(q:get()) end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    -- Nobody waits: a notification is not kept for a later waiter.
    cond:acquire(); cond:notify(); assert.is_false(cond:wait(0.05)); cond:release()
    assert.equal("closed", kind_of(function() cond:notify() end))
    assert.equal("closed", kind_of(function() cond:wait(1) end))
    assert.error_matches(function() lmp.Condition("x") end, "bad argument #1 to 'Condition'")
  end)

  it("Condition wait_for across processes, over a plain Lock and an RLock held twice", function()
    for _, lock in ipairs{lmp.Lock(), lmp.RLock()} do
      local cond, state = lmp.Condition(lock), lmp.Value("i", 0)
      local p = lmp.Process{target = function(c, s)
        for i = 1, 3 do
          c:acquire(); s.value = i; c:notify_all(); c:release()
        end
      end, args = {cond, state}}
      cond:acquire()
      if getmetatable(lock) == getmetatable(lmp.RLock()) then cond:acquire() end
      p:start()
      assert.is_true(cond:wait_for(function() return state.value == 3 end, 20))
      assert.is_false(cond:wait_for(function() return state.value == 4 end, 0.05))
      -- Held as before the wait (twice for the RLock).
      assert.is_true(lock:locked())
      cond:release()
      if getmetatable(lock) == getmetatable(lmp.RLock()) then cond:release() end
      assert.is_false(lock:locked())
      p:join(); assert.equal(0, p.exitcode)
    end
  end)

  it("a Barrier of 3 processes gives indices 0 to 2, runs its action once a round", function()
    local runs = lmp.Value("i", 0)
    local barrier = lmp.Barrier(3, function() runs.value = runs.value + 1 end, 20)
    assert.equal(3, barrier.parties)
    local q = lmp.Queue()
    local procs = {}
    for i = 1, 2 do
      -- runs goes in args too: the action's upvalue needs its descriptor.
      procs[i] = lmp.Process{target = function(b, out)
        for _ = 1, 3 do out:put(b:wait()) end
      end, args = {barrier, q, runs}}
      procs[i]:start()
    end
    local seen = {}
    for round = 1, 3 do
      local mine = barrier:wait()
      local indices = {mine, q:get(), q:get()}
      table.sort(indices)
      assert.same({0, 1, 2}, indices)
      seen[round] = runs.value
    end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    assert.equal(3, runs.value)
    assert.equal(0, barrier:n_waiting())
    assert.is_false(barrier:broken())
  end)

  it("a Barrier aborted, reset, or timed out breaks for every party", function()
    local barrier, q = lmp.Barrier(3), lmp.Queue()
    local function start_parties(n)
      local procs = {}
      for i = 1, n do
        procs[i] = lmp.Process{target = function(b, out)
          local ok, err = pcall(b.wait, b, 20)
          out:put(ok and "passed" or err.kind)
        end, args = {barrier, q}}
        procs[i]:start()
      end
      until_equal(n, function() return barrier:n_waiting() end)
      return procs
    end
    -- abort
    local procs = start_parties(2)
    barrier:abort()
    assert.equal("broken_barrier", q:get()); assert.equal("broken_barrier", q:get())
    for _, p in ipairs(procs) do p:join() end
    assert.is_true(barrier:broken())
    assert.equal("broken_barrier", kind_of(function() barrier:wait(1) end))
    -- reset mends it
    barrier:reset()
    assert.is_false(barrier:broken())
    -- reset while parties wait: they get broken_barrier, the barrier is fine after
    procs = start_parties(2)
    barrier:reset()
    assert.equal("broken_barrier", q:get()); assert.equal("broken_barrier", q:get())
    for _, p in ipairs(procs) do p:join() end
    until_equal(0, function() return barrier:n_waiting() end)
    assert.is_false(barrier:broken())
    -- a timeout breaks it for the others too
    procs = start_parties(1)
    assert.equal("broken_barrier", kind_of(function() barrier:wait(0.1) end))
    assert.equal("broken_barrier", q:get())
    procs[1]:join()
    assert.is_true(barrier:broken())
    barrier:reset()
    -- an action that raises breaks it; the last party gets the action's error
    local failing = lmp.Barrier(1, function() error("no") end)
    assert.error_matches(function() failing:wait() end, "no")
    assert.is_true(failing:broken())
    assert.error_matches(function() lmp.Barrier(0) end, "bad argument #1 to 'Barrier'")
  end)

  it("a Barrier party killed while it waits breaks the round for the others, and reset mends it",
     function()
    local b, out = lmp.Barrier(3), lmp.Queue()
    local victim = lmp.Process{target = function(barrier) barrier:wait(60) end, args = {b}}
    victim:start()
    until_equal(1, function() return b:n_waiting() end)
    os.execute("kill -9 " .. victim.pid)
    victim:join()
    -- One live party waits with the dead one: the round can never fill.
    local t0 = core.hrtime()
    assert.equal("broken_barrier", kind_of(function() b:wait(60) end))
    assert.is_true(core.hrtime() - t0 < 10, "the dead party was noticed late")
    assert.is_true(b:broken())
    b:reset()
    local parties = {}
    for i = 1, 2 do
      parties[i] = lmp.Process{target = function(barrier, o) o:put(barrier:wait(30)) end,
        args = {b, out}}
      parties[i]:start()
    end
    local indices = {b:wait(30), out:get(true, 30), out:get(true, 30)}
    table.sort(indices)
    assert.same({0, 1, 2}, indices)
    for i = 1, 2 do parties[i]:join(); assert.equal(0, parties[i].exitcode) end
    out:close()
  end)

  it("a Barrier round that a dead party was counted in does not wedge the next round", function()
    local b = lmp.Barrier(2)
    local victim = lmp.Process{target = function(barrier) barrier:wait(60) end, args = {b}}
    victim:start()
    until_equal(1, function() return b:n_waiting() end)
    os.execute("kill -9 " .. victim.pid)
    victim:join()
    -- It arrived before it died: this round completes with it (as in
    -- Python), and the dead party, which never leaves, is left for by a
    -- live one, so that the next round begins.
    assert.equal(1, b:wait(30))
    local partner = lmp.Process{target = function(barrier) os.exit(barrier:wait(30) + 10) end,
      args = {b}}
    partner:start()
    local mine = b:wait(30)
    partner:join(30)
    assert.same({0, 1}, {math.min(mine, partner.exitcode - 10), math.max(mine, partner.exitcode - 10)})
    assert.is_false(b:broken())
  end)

  it("a Condition whose waiter is killed: notify goes on, the next waiter is woken; a holder "
     .. "killed passes the lock on, told owner_died", function()
    local c, out = lmp.Condition(), lmp.Queue()
    local victim = lmp.Process{target = function(cond, o)
      cond:acquire(); o:put("waiting"); cond:wait(60)
    end, args = {c, out}}
    victim:start()
    assert.equal("waiting", out:get(true, 30))
    os.execute("kill -9 " .. victim.pid)
    victim:join()
    local t0 = core.hrtime()
    c:acquire()
    c:notify() -- its ticket goes to the dead waiter: notify waits a while for it, then goes on
    c:release()
    assert.is_true(core.hrtime() - t0 < 10)
    local waiter = lmp.Process{target = function(cond, o)
      cond:acquire(); o:put("waiting"); o:put(cond:wait(30)); cond:release()
    end, args = {c, out}}
    waiter:start()
    assert.equal("waiting", out:get(true, 30))
    c:acquire(); c:notify(); c:release()
    assert.is_true(out:get(true, 30))
    waiter:join(); assert.equal(0, waiter.exitcode)
    -- A process killed holding the condition's lock.
    local holder = lmp.Process{target = function(cond, o)
      cond:acquire(); o:put("holding"); lmp.sleep(60)
    end, args = {c, out}}
    holder:start()
    assert.equal("holding", out:get(true, 30))
    os.execute("kill -9 " .. holder.pid)
    holder:join()
    assert.same({true, "owner_died", n = 2}, table.pack(c:acquire(true, 30)))
    c:notify_all()
    c:release()
    out:close()
  end)

  it("a Semaphore's value taken by a process that dies stays taken, as in Python; any process "
     .. "may give it back", function()
    for _, class in ipairs{"Semaphore", "BoundedSemaphore"} do
      local s, held = lmp[class](1), lmp.Event()
      local holder = lmp.Process{target = function(sem, h) sem:acquire(); h:set(); lmp.sleep(60) end,
        args = {s, held}}
      holder:start()
      assert.is_true(held:wait(30))
      os.execute("kill -9 " .. holder.pid)
      holder:join()
      assert.equal(0, s:get_value())
      assert.is_false(s:acquire(true, 0.2))
      s:release()
      assert.is_true(s:acquire(true, 10))
      s:release()
    end
  end)

  it("Ctrl-C interrupts the main process waiting on a lock", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local lock, held, never = lmp.Lock(), lmp.Event(), lmp.Event()
      local p = lmp.Process{target = function(l, h, n) l:acquire(); h:set(); n:wait() end,
        args = {lock, held, never}}
      p:start()
      held:wait()
      io.write("waiting\n"); io.flush()
      lock:acquire()
    ]], helpers.ctrl_c_when_waiting)
    assert.equal(0, status)
    assert.matches("status 130", out)
  end)

  it("the futex primitives work alone, in C, between forked processes", function()
    local program = helpers.build .. "/test/futex_test"
    local status, out, err = helpers.make(program)
    assert.equal(0, status, out .. err)
    status, out, err = helpers.run("'" .. program .. "'")
    assert.equal(0, status, out .. err)
    assert.matches("futex_test: 0 failed", out)
  end)

  it("with luv loaded, a wait in the main process still wakes when a child sets the Event", function()
    local status, out, err = helpers.run_lua([[
      local uv = require "luv"
      local lmp = require "lmp"
      local ev, ticks = lmp.Event(), 0
      local timer = uv.new_timer()
      timer:start(10, 10, function() ticks = ticks + 1 end)
      local p = lmp.Process{target = function(e) lmp.sleep(0.2); e:set() end, args = {ev}}
      p:start()
      local got = ev:wait(10)
      p:join()
      timer:close()
      print(got, p.exitcode)
    ]], helpers.runner)
    assert.equal(0, status, err)
    assert.matches("true\t0", out)
  end)
end)

