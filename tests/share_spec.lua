-- Every object reaches pool workers: queues, Pipe ends, locks, events,
-- Value, Array and SharedMemory given to workers as task arguments, as
-- results, and through initargs, with both start methods. Their
-- descriptors travel with the frames of the worker's channel (SCM_RIGHTS);
-- SharedMemory travels by name.
local describe, it, setup, teardown, assert, pcall =
  describe, it, setup, teardown, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

-- The descriptors process `pid` has open.
local function fds_of(pid)
  local n = 0
  for entry in require("lfs").dir("/proc/" .. pid .. "/fd") do
    if entry:match("^%d+$") then n = n + 1 end
  end
  return n
end

local function sorted(t)
  table.sort(t)
  return t
end

local function repeated(value, n)
  local t = {n = n}
  for i = 1, n do t[i] = value end
  return t
end

for _, method in ipairs{"spawn", "fork"} do
  describe("sharing with " .. method .. " pool workers", function()
    local pool
    setup(function() pool = lmp.Pool{processes = 2, start_method = method} end)
    teardown(function()
      pool:close()
      pool:join()
      assert.is_true(helpers.no_children())
    end)

    it("a Queue as a task argument: workers put and the main process gets, and the reverse",
      function()
        local q = lmp.Queue()
        pool:starmap(function(queue, x) queue:put(x * 10) end, {{q, 1}, {q, 2}, {q, 3}, {q, 4}})
        local got = {}
        for i = 1, 4 do got[i] = q:get(true, 30) end
        assert.same({10, 20, 30, 40}, sorted(got))
        for i = 1, 4 do q:put(i) end
        local taken = pool:map(function(queue) return queue:get(true, 30) end, repeated(q, 4), 1)
        assert.same({1, 2, 3, 4}, sorted({table.unpack(taken, 1, 4)}))
        -- In a function's upvalue, and through submit's arguments too.
        pool:apply(function() q:put("upvalue") end)
        assert.equal("upvalue", q:get(true, 30))
        local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1}
        ex:submit(function(queue, x) queue:put(x) end, q, "submitted"):result(60)
        assert.equal("submitted", q:get(true, 30))
        q:close()
      end)

    it("a Queue made by a worker is a result the main process uses", function()
      local q = pool:apply(function()
        local made = require("lmp").Queue()
        made:put("made in a worker")
        made:join_thread()
        return made
      end)
      assert.equal("made in a worker", q:get(true, 30))
      q:put("back")
      assert.equal("back", pool:apply(function(queue) return queue:get(true, 30) end, {q}))
      -- The main process's own queue comes back as one that works.
      local mine = lmp.Queue()
      local returned = pool:apply(function(queue) return queue end, {mine})
      returned:put(5)
      assert.equal(5, mine:get(true, 30))
    end)

    it("a Lock given to workers serialises them: a counter in a Value reaches the exact total",
      function()
        local lock, counter = lmp.Lock(), lmp.Value("i", 0, {lock = false})
        pool:starmap(function(l, v, n)
          for _ = 1, n do
            l:acquire()
            local before = v.value
            v.value = before + 1
            l:release()
          end
        end, {{lock, counter, 300}, {lock, counter, 300}, {lock, counter, 300}, {lock, counter, 300}}, 1)
        assert.equal(1200, counter.value)
      end)

    it("a Lock made or held across processes: a worker sees the main process hold it", function()
      local lock = pool:apply(function() return require("lmp").Lock() end)
      assert.is_true(lock:acquire(false))
      assert.is_false(pool:apply(function(l) return l:acquire(false) end, {lock}))
      lock:release()
      assert.is_true(pool:apply(function(l)
        local got = l:acquire(false)
        if got then l:release() end
        return got
      end, {lock}))
    end)

    it("a Pipe end passed to a worker carries its answer back; one made there is a result",
      function()
        local mine, theirs = lmp.Pipe()
        local pid = pool:apply(function(conn)
          conn:send({hello = "from a worker"})
          return require("lmp.core").getpid()
        end, {theirs})
        assert.same({hello = "from a worker"}, mine:recv())
        assert.is_true(pid ~= core.getpid())
        local far = pool:apply(function()
          local a, b = require("lmp").Pipe()
          b:send("sent before it travelled")
          b:close()
          return a
        end)
        assert.equal("sent before it travelled", far:recv())
        mine:close(); theirs:close(); far:close()
      end)

    it("every synchronisation object goes to a worker and comes back as itself", function()
      local made = {Lock = {}, RLock = {}, Semaphore = {2}, BoundedSemaphore = {2}, Event = {},
                    Condition = {}, Barrier = {2}}
      for name, args in pairs(made) do
        if lmp[name] then
          local object = lmp[name](table.unpack(args))
          local back, seen = pool:apply(function(o) return o, getmetatable(o).__name end, {object})
          assert.equal(getmetatable(object), getmetatable(back), name)
          assert.equal(getmetatable(object).__name, seen, name)
        end
      end
      local s = lmp.Semaphore(2)
      assert.is_true(pool:apply(function(x) return x:acquire(false) end, {s}))
      assert.equal(1, s:get_value())
    end)

    it("an Event set by the main process releases workers waiting in tasks", function()
      local event = lmp.Event()
      local r = pool:map_async(function(e) return e:wait(60) end, {event, event}, {chunksize = 1})
      lmp.sleep(0.2)
      assert.is_false(r:ready())
      event:set()
      assert.same({true, true, n = 2}, r:get(60))
      -- An Event made by a worker is a result: set here, seen there.
      local theirs = pool:apply(function() return require("lmp").Event() end)
      theirs:set()
      assert.is_true(pool:apply(function(e) return e:is_set() end, {theirs}))
    end)

    it("Value and Array written by workers are read by the main process, both ways", function()
      local a = lmp.Array("i", 4)
      pool:map(function(pair) pair[1][pair[2]] = pair[2] * 10 end, {{a, 1}, {a, 2}, {a, 3}, {a, 4}}, 1)
      assert.same({10, 20, 30, 40}, a:totable())
      local v = pool:apply(function()
        local made = require("lmp").Value("d", 0)
        made.value = 2.5
        return made
      end)
      assert.equal(2.5, v.value)
      v.value = 7
      assert.equal(7, pool:apply(function(x) return x.value end, {v}))
      local b = pool:apply(function() return require("lmp").Array("q", {1, 2, 3}) end)
      assert.same({1, 2, 3}, b:totable())
    end)

    it("SharedMemory travels by name, both ways", function()
      local shm = lmp.shared_memory.SharedMemory{create = true, size = 64}
      local back = pool:apply(function(s)
        s:write(0, "written by a worker")
        return s
      end, {shm})
      assert.equal("written by a worker", shm:read(0, 19))
      assert.equal(shm.name, back.name)
      back:write(0, "W")
      assert.equal("Written by a worker", shm:read(0, 19))
      shm:close()
      shm:unlink()
    end)

    it("the same object twice in one message arrives as one object", function()
      local q = lmp.Queue()
      local a, b = lmp.Pipe()
      assert.is_true(pool:apply(function(x, y, c, d)
        return rawequal(x, y) and rawequal(c, d) and rawequal(x.reader, y.reader)
      end, {q, q, a, a}))
      local same = pool:apply(function(x) return x, x end, {q})
      assert.is_true(same ~= nil)
      local r1, r2 = pool:apply(function(x) return x, x end, {q})
      assert.is_true(rawequal(r1, r2))
      q:close(); a:close(); b:close()
    end)

    it("no descriptor leaks, in the main process or the workers, over 1,000 tasks", function()
      local q, lock, v = lmp.Queue(), lmp.Lock(), lmp.Value("i", 0)
      local pids = pool:map(function(x) return require("lmp.core").getpid() end, {1, 2, 3, 4}, 1)
      -- One round first: each side keeps what it needs (its copy of the
      -- queue's descriptors, libuv's own) from then on.
      pool:map(function(t) return t[1] ~= nil end, repeated({q, lock, v}, 8), 1)
      local workers = {}
      for i = 1, 4 do workers[pids[i]] = true end
      local before_main, before = helpers.open_fds(), {}
      for pid in pairs(workers) do before[pid] = fds_of(pid) end
      -- Every task is encoded when map is called, each holding the three
      -- objects: they share one copy of each descriptor until sent.
      local pending = pool:map_async(function(t) return t end, repeated({q, lock, v}, 1000),
        {chunksize = 1})
      local count = 0
      for _ in require("lfs").dir("/proc/self/fd") do count = count + 1 end
      assert.is_true(count < before_main + 20, "descriptors held while tasks wait: " .. count)
      local results = pending:get(120)
      assert.equal(1000, results.n)
      assert.is_true(rawequal(results[1][1].reader, results[1000][1].reader))
      results = nil
      assert.equal(before_main, helpers.open_fds())
      -- No collection in the workers: what arrives again is the object a
      -- worker has (or it is closed at once), so their counts stay put
      -- (give or take one copy of the objects, should the collector have
      -- taken theirs meanwhile).
      for pid in pairs(workers) do
        if helpers.alive(pid) then assert.is_true(fds_of(pid) <= before[pid] + 6) end
      end
      q:close()
    end)

    it("descriptors queued behind a frame the channel could not take at once arrive", function()
      -- One worker, sent a big argument and then a queue, three times: the
      -- queue's frame finds the channel full and waits behind the big one.
      local q = lmp.Queue()
      local single <close> = lmp.Pool{processes = 1, start_method = method}
      local big = string.rep("x", 24 << 20)
      local results = {}
      for _ = 1, 3 do
        results[#results + 1] = single:apply_async(function(s) return #s end, {big})
        results[#results + 1] = single:apply_async(function(queue)
          queue:put("after the big one")
          return true
        end, {q})
      end
      for i, r in ipairs(results) do
        assert.equal(i % 2 == 1 and 24 << 20 or true, r:get(60))
      end
      for _ = 1, 3 do assert.equal("after the big one", q:get(true, 30)) end
      q:close()
    end)
  end)

  describe("sharing through initargs with " .. method .. " pool workers", function()
    teardown(function() assert.is_true(helpers.no_children()) end)

    it("a Queue, a Lock, a Value and a Pipe end given to the initializer", function()
      local q, lock, v = lmp.Queue(), lmp.Lock(), lmp.Value("i", 0, {lock = false})
      local mine, theirs = lmp.Pipe()
      local pool <close> = lmp.Pool{processes = 2, start_method = method,
        initializer = function(queue, l, value, conn)
          _G.Q, _G.LOCK, _G.V = queue, l, value
          conn:send("initialized")
        end,
        initargs = {q, lock, v, theirs}}
      assert.equal("initialized", mine:recv())
      assert.equal("initialized", mine:recv())
      pool:map(function(x)
        LOCK:acquire(); V.value = V.value + x; LOCK:release()
        Q:put(x)
      end, {1, 2, 3, 4, 5}, 1)
      assert.equal(15, v.value)
      local got = {}
      for i = 1, 5 do got[i] = q:get(true, 30) end
      assert.same({1, 2, 3, 4, 5}, sorted(got))
      mine:close(); theirs:close(); q:close()
    end)

    it("a Queue given to an executor's initializer", function()
      local q = lmp.Queue()
      local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1, start_method = method,
        initializer = function(queue) _G.EXECUTOR_Q = queue end, initargs = {q}}
      ex:submit(function(x) EXECUTOR_Q:put(x) end, "via initargs"):result(60)
      assert.equal("via initargs", q:get(true, 30))
      q:close()
    end)

    it("too many descriptors in one task are refused when the task is made", function()
      local many = {}
      for i = 1, 70 do many[i] = lmp.Event() end
      local pool <close> = lmp.Pool{processes = 1, start_method = method}
      local ok, err = pcall(pool.apply, pool, function(t) return #t end, {many})
      assert.is_false(ok)
      assert.matches("at most 64 descriptors", tostring(err))
      assert.equal(70, pool:map(function(e) return e:is_set() and 1 or 0 end, many, 10).n)
    end)
  end)
end

describe("sharing, faults and refusals", function()
  teardown(function() assert.is_true(helpers.no_children()) end)

  it("a worker killed while it holds a passed Queue is replaced; the queue still works", function()
    local q = lmp.Queue()
    local pool <close> = lmp.Pool(1)
    local r = pool:apply_async(function(queue)
      queue:put(require("lmp.core").getpid())
      while true do end
    end, {q})
    local victim = q:get(true, 60)
    core.kill(victim, 9)
    local ok, err = pcall(r.get, r, 60)
    assert.is_false(ok)
    assert.equal("worker_lost", err.kind)
    q:put("still here")
    assert.equal("still here", q:get(true, 30))
    pool:apply(function(queue) queue:put("from the replacement") end, {q})
    assert.equal("from the replacement", q:get(true, 30))
    q:close()
  end)

  it("lmp.dumps, a Pipe and a Queue refuse what holds a descriptor, saying where it travels",
    function()
      local q = lmp.Queue()
      local ok, err = pcall(lmp.dumps, {q})
      assert.is_false(ok)
      assert.matches("travels only to pool workers and lmp.Process children", tostring(err))
      local a, b = lmp.Pipe()
      ok, err = pcall(a.send, a, lmp.Lock())
      assert.is_false(ok)
      assert.matches("travels only to pool workers", tostring(err))
      ok, err = pcall(q.put, q, b)
      assert.is_false(ok)
      assert.matches("travels only to pool workers", tostring(err))
      a:close(); b:close(); q:close()
    end)

  it("an lmp.Process is given a Queue and a Lock as before", function()
    local q, lock = lmp.Queue(), lmp.Lock()
    local p = lmp.Process{target = function(queue, l)
      l:acquire(); queue:put("from a process"); l:release()
    end, args = {q, lock}}
    p:start()
    assert.equal("from a process", q:get(true, 30))
    p:join(30)
    assert.equal(0, p.exitcode)
    q:close()
  end)
end)

-- Every object reaches a pool worker every way: through initargs, as a
-- task argument, and back as a task's result (made in the worker, used
-- here, then given to the worker again). Each kind's exercise(o, run)
-- works the object from both sides; run(f) calls f(o) in the worker (as
-- the object arrived there) and returns the AsyncResult.
local sm = lmp.shared_memory

local kinds = {
  {"Queue", function() return require("lmp").Queue() end, function(q, run)
    assert.is_true(run(function(o) o:put("from a worker"); return true end):get(60))
    assert.equal("from a worker", q:get(true, 30))
    q:put("to a worker")
    assert.equal("to a worker", run(function(o) return o:get(true, 30) end):get(60))
  end},
  {"JoinableQueue", function() return require("lmp").JoinableQueue() end, function(q, run)
    assert.is_true(run(function(o) o:put("from a worker"); return true end):get(60))
    assert.equal("from a worker", q:get(true, 30))
    q:task_done()
    assert.is_true(q:join(30))
    q:put("to a worker")
    assert.equal("to a worker", run(function(o)
      local v = o:get(true, 30); o:task_done(); return v
    end):get(60))
    assert.is_true(q:join(30))
  end},
  {"SimpleQueue", function() return require("lmp").SimpleQueue() end, function(q, run)
    assert.is_true(run(function(o) o:put("from a worker"); return true end):get(60))
    assert.equal("from a worker", q:get())
    q:put("to a worker")
    assert.equal("to a worker", run(function(o) return o:get() end):get(60))
  end},
  {"Pipe", function() return {require("lmp").Pipe()} end, function(ends, run)
    assert.is_true(run(function(o) o[2]:send("from a worker"); return true end):get(60))
    assert.equal("from a worker", ends[1]:recv())
    ends[1]:send("to a worker")
    assert.equal("to a worker", run(function(o) return o[2]:recv() end):get(60))
  end},
  {"Lock", function() return require("lmp").Lock() end, function(l, run)
    assert.is_true(l:acquire(false))
    local r = run(function(o) return o:acquire(true, 30) end)
    lmp.sleep(0.1)
    assert.is_false(r:ready())
    l:release()
    assert.is_true(r:get(60))
    assert.is_true(l:locked()) -- held by the worker; any process may release a Lock
    l:release()
    assert.is_false(l:locked())
  end},
  {"RLock", function() return require("lmp").RLock() end, function(l, run)
    assert.is_true(run(function(o) return o:acquire(false) end):get(60))
    assert.is_false(l:acquire(false)) -- the worker holds it
    assert.is_true(run(function(o) o:release(); return true end):get(60))
    assert.is_true(l:acquire(false))
    l:acquire(); l:release(); l:release()
  end},
  {"Semaphore", function() return require("lmp").Semaphore(0) end, function(s, run)
    local r = run(function(o) return o:acquire(true, 30) end)
    s:release()
    assert.is_true(r:get(60))
    assert.equal(0, s:get_value())
    assert.is_true(run(function(o) o:release(); return true end):get(60))
    assert.equal(1, s:get_value())
  end},
  {"BoundedSemaphore", function() return require("lmp").BoundedSemaphore(1) end, function(s, run)
    assert.is_true(run(function(o) return o:acquire(false) end):get(60))
    assert.equal(0, s:get_value())
    s:release()
    assert.has_error(function() s:release() end)
    assert.is_false(run(function(o) return pcall(o.release, o) end):get(60))
  end},
  {"Event", function() return require("lmp").Event() end, function(e, run)
    local r = run(function(o) return o:wait(30) end)
    e:set()
    assert.is_true(r:get(60))
    assert.is_true(run(function(o) o:clear(); return true end):get(60))
    assert.is_false(e:is_set())
  end},
  {"Condition", function() return require("lmp").Condition() end, function(c, run)
    c:acquire()
    local r = run(function(o) o:acquire(); o:notify(); o:release(); return true end)
    assert.is_true(c:wait(30))
    c:release()
    assert.is_true(r:get(60))
  end},
  {"Barrier", function() return require("lmp").Barrier(2) end, function(b, run)
    local r = run(function(o) return o:wait(30) end)
    local mine = b:wait(30)
    assert.same({0, 1}, sorted({mine, r:get(60)}))
  end},
  {"Value", function() return require("lmp").Value("i", 0) end, function(v, run)
    assert.is_true(run(function(o)
      o:get_lock():acquire(); o.value = o.value + 42; o:get_lock():release(); return true
    end):get(60))
    assert.equal(42, v.value)
    v.value = 7
    assert.equal(7, run(function(o) return o.value end):get(60))
  end},
  {"Array", function() return require("lmp").Array("i", 3) end, function(a, run)
    assert.is_true(run(function(o) o[2] = 42; return true end):get(60))
    assert.same({0, 42, 0}, a:totable())
    a[3] = 7
    assert.equal(7, run(function(o) return o[3] end):get(60))
  end},
  {"SharedMemory", function()
    return require("lmp").shared_memory.SharedMemory{create = true, size = 16}
  end, function(shm, run)
    assert.is_true(run(function(o) o:write(0, "from a worker"); return true end):get(60))
    assert.equal("from a worker", shm:read(0, 13))
    shm:write(0, "to a worker  ")
    assert.equal("to a worker  ", run(function(o) return o:read(0, 13) end):get(60))
    shm:unlink()
  end},
  {"ShareableList", function()
    return require("lmp").shared_memory.ShareableList({1, "two", 3.0})
  end, function(l, run)
    assert.is_true(run(function(o) o[1] = 42; return true end):get(60))
    assert.equal(42, l[1])
    l[2] = "TWO"
    assert.equal("TWO", run(function(o) return o[2] end):get(60))
    l.shm:unlink()
  end},
}
assert(sm.ShareableList)

for _, method in ipairs{"spawn", "fork", "forkserver"} do
  describe("every object reaches " .. method .. " pool workers every way", function()
    teardown(function()
      core.forkserver_stop()
      assert.is_true(helpers.no_children())
    end)

    local function argument_run(pool, o)
      return function(f) return pool:apply_async(function(x, fn) return fn(x) end, {o, f}) end
    end

    it("through initargs", function()
      local objects = {}
      for _, kind in ipairs(kinds) do objects[kind[1]] = kind[2]() end
      local pool <close> = lmp.Pool{processes = 1, start_method = method,
        initializer = function(t) SHARE_SPEC_OBJECTS = t end, initargs = {objects}}
      for _, kind in ipairs(kinds) do
        local name = kind[1]
        kind[3](objects[name], function(f)
          return pool:apply_async(function(n, fn) return fn(SHARE_SPEC_OBJECTS[n]) end, {name, f})
        end)
      end
    end)

    it("as task arguments", function()
      local pool <close> = lmp.Pool{processes = 1, start_method = method}
      for _, kind in ipairs(kinds) do
        local o = kind[2]()
        kind[3](o, argument_run(pool, o))
      end
    end)

    it("as results: made in a worker, used here, and given back", function()
      local pool <close> = lmp.Pool{processes = 1, start_method = method}
      for _, kind in ipairs(kinds) do
        -- The worker keeps its own copy, as a maker that goes on using the
        -- object would (a creator that lets go of a segment unlinks it).
        local o = pool:apply(function(make)
          local made = make()
          SHARE_SPEC_KEPT = SHARE_SPEC_KEPT or {}
          SHARE_SPEC_KEPT[#SHARE_SPEC_KEPT + 1] = made
          return made
        end, {kind[2]})
        assert.is_not_nil(o, kind[1])
        kind[3](o, argument_run(pool, o))
      end
    end)
  end)
end
