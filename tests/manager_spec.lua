-- lmp.Manager: a process of its own serving every proxy type Python's
-- managers have, to the main process, lmp.Process children and pool
-- workers; its end (shutdown, <close>, collected, parent killed), and
-- what a client sees when the manager or another client dies.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

-- Starts fn(...) in an lmp.Process and returns it.
local function start(fn, ...)
  local p = lmp.Process{target = fn, args = table.pack(...)}
  p:start()
  return p
end

local function joined(p)
  p:join(30)
  return p.exitcode
end

-- The error a call raises.
local function failure(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

describe("Manager", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("pool workers change a dict and a list through proxies", function()
    local m <close> = lmp.Manager()
    local d, l = m:dict({start = 1}), m:list({0})
    local pool <close> = lmp.Pool(2)
    pool:map(function(i)
      d:set("k" .. i, i * i)
      d:add("total", i)
      l:append(i)
    end, {1, 2, 3, 4, 5, 6}, 1)
    assert.equal(25, d:get("k5"))
    assert.equal(21, d:get("total"))
    assert.equal(8, d:len())
    assert.equal(7, #l)
    local items = l:copy()
    table.sort(items)
    assert.same({0, 1, 2, 3, 4, 5, 6}, {table.unpack(items, 1, 7)})
    assert.equal("missing", d:get("nope", "missing"))
    assert.is_true(d:contains("start"))
    assert.equal(1, d:pop("start"))
    assert.is_false(d:contains("start"))
  end)

  it("proxies reach pool workers through initargs, as task arguments and results, spawned or forked", function()
    local m <close> = lmp.Manager()
    local q, lock = m:Queue(), m:Lock()
    for _, method in ipairs({"spawn", "fork"}) do
      local pool <close> = lmp.Pool{processes = 2, start_method = method,
        initializer = function(queue) MANAGER_SPEC_QUEUE = queue end, initargs = {q}}
      local back = pool:map(function(l)
        assert(l:acquire(true, 20))
        MANAGER_SPEC_QUEUE:put(method)
        l:release()
        return l
      end, {lock, lock, lock}, 1)
      for i = 1, 3 do
        assert.equal(lock, back[i])
        assert.equal(method, q:get(true, 10))
      end
    end
    assert.is_false(lock:locked())
  end)

  it("a call that waits in the main process turns the loop: callbacks run meanwhile", function()
    local m <close> = lmp.Manager()
    local q = m:Queue()
    local pool <close> = lmp.Pool(1)
    -- The callback runs in the main process while q:get waits there, and
    -- makes its own call to the manager (on a second connection).
    pool:apply_async(function() return "cb" end, {}, {callback = function(v) q:put(v) end})
    assert.equal("cb", q:get(true, 20))
    local co_got
    lmp.spawn(function() co_got = q:get(true, 20) end)
    q:put("to the coroutine")
    assert.is_true(helpers.wait_for(function() return co_got ~= nil end, 20))
    assert.equal("to the coroutine", co_got)
  end)

  it("answers while the main process computes: it is a process of its own", function()
    local m <close> = lmp.Manager()
    assert.are_not.equal(core.getpid(), m.pid)
    assert.is_true(helpers.alive(m.pid))
    local d, q = m:dict(), m:Queue()
    local p = start(function(dict, queue)
      local clock = require("lmp.core").hrtime
      local t0 = clock()
      for i = 1, 10 do dict:set(i, i) end
      queue:put("done")
      dict:set("elapsed", clock() - t0)
    end, d, q)
    -- Busy for a second at least, never turning the loop, until the child
    -- has done its calls and ended.
    local t0 = core.hrtime()
    while core.hrtime() - t0 < 1 or (helpers.alive(p.pid) and core.hrtime() - t0 < 20) do end
    assert.is_false(helpers.alive(p.pid), "the child did not finish while the main process computed")
    assert.equal(0, joined(p))
    assert.equal("done", q:get(false))
    assert.equal(11, d:len())
    assert.is_true(d:get("elapsed") < 0.9, "10 calls took " .. d:get("elapsed") .. " s")
  end)

  it("dict: every method, from the main process and a child", function()
    local m <close> = lmp.Manager()
    local d = m:dict({a = 1})
    assert.equal(0, joined(start(function(p)
      p:set("b", {2})
      p:update({c = 3, d = 4})
      assert(p:setdefault("a", 9) == 1 and p:setdefault("e", 5) == 5)
      p:set("d", nil)
    end, d)))
    assert.same({"a", "b", "c", "e"}, d:keys()) -- in the order keys were first set
    assert.equal(4, #d)
    assert.same({2}, d:get("b"))
    local seen = {}
    for k, v in pairs(d) do seen[k] = v end
    assert.same({a = 1, b = {2}, c = 3, e = 5}, seen)
    assert.same({a = 1, b = {2}, c = 3, e = 5}, d:copy())
    assert.same({1, {2}, 3, 5}, d:values())
    local items = d:items()
    assert.equal(4, #items)
    assert.equal("a", items[1][1]) -- in the order keys were first set
    local k, v = d:popitem()
    assert.equal("e", k)
    assert.equal(5, v)
    assert.equal("x", d:pop("nope", "x"))
    d:clear()
    assert.equal(0, d:len())
    assert.is_nil(d:popitem())
    assert.matches("a key must be", tostring(failure(d.get, d, {})))
  end)

  it("list: every method, indexing from 1, negative indices from the end", function()
    local m <close> = lmp.Manager()
    local l = m:list({"a", "b"})
    assert.equal(0, joined(start(function(list)
      list:set(1, "A")
      list:append("c")
    end, l)))
    assert.equal("index", failure(function() l[4] = "past the end" end).kind)
    assert.equal("A", l:get(1))
    assert.equal("c", l[-1])
    assert.is_nil(l[9])
    assert.equal(3, #l)
    assert.equal("c", l:pop())
    local err = failure(l.get, l, 9)
    assert.equal("index", err.kind)
    assert.matches("index out of range", err.message)
    l:extend({3, 1, 2})
    l:insert(1, 0)
    l:insert(-1, 2.5) -- before the last
    assert.same({0, "A", "b", 3, 1, 2.5, 2}, {table.unpack(l:copy(), 1, 7)})
    assert.equal(4, l:index(3))
    assert.equal("value", failure(l.index, l, 99).kind)
    l:remove("A")
    l:remove("b")
    assert.equal(1, l:count(3))
    assert.is_true(l:contains(2.5))
    l:sort()
    assert.same({0, 1, 2, 2.5, 3, n = 5}, l:copy())
    l:sort{reverse = true}
    assert.same({3, 2.5, 2, 1, 0, n = 5}, l:copy())
    l:reverse()
    assert.same({1, 2, n = 2}, l:slice(2, 3))
    assert.same({2.5, 3, n = 2}, l:slice(-2))
    l:set_slice(2, 4, {"x"})
    assert.same({0, "x", 3, n = 3}, l:copy())
    local got = {}
    for i, v in ipairs(l) do got[i] = v end
    assert.same({0, "x", 3}, got)
    l:append({})
    assert.matches("all numbers or all strings", tostring(failure(l.sort, l)))
    l:clear()
    assert.equal(0, #l)
    assert.equal("index", failure(l.pop, l).kind)
  end)

  it("a proxy stored in a dict or a list reads back as a proxy to the same object", function()
    local m <close> = lmp.Manager()
    local inner, l, d = m:dict(), m:list(), m:dict()
    l:append(inner)
    d:set("q", m:Queue())
    local pool <close> = lmp.Pool(1)
    pool:apply(function(list, dict)
      list:get(1):set("from", "worker")
      dict:get("q"):put(42)
    end, {l, d})
    assert.equal("worker", inner:get("from"))
    assert.equal(inner, l:get(1))
    assert.equal(42, d:get("q"):get(true, 10))
  end)

  it("Queue: items between processes, get and put timeouts, maxsize", function()
    local m <close> = lmp.Manager()
    local q = m:Queue(2)
    local p = start(function(queue) for i = 1, 5 do queue:put(i) end end, q)
    local got = {}
    for i = 1, 5 do got[i] = q:get(true, 20) end
    assert.same({1, 2, 3, 4, 5}, got)
    assert.equal(0, joined(p))
    assert.is_true(q:empty())
    local t0 = core.hrtime()
    local err = failure(q.get, q, true, 0.2)
    assert.equal("empty", err.kind)
    assert.is_true(core.hrtime() - t0 >= 0.19)
    assert.equal("empty", failure(q.get_nowait, q).kind)
    q:put("a")
    q:put_nowait("b")
    assert.is_true(q:full())
    assert.equal(2, q:qsize())
    assert.equal("full", failure(q.put, q, "c", true, 0.05).kind)
    assert.equal("full", failure(q.put_nowait, q, "c").kind)
    assert.equal("a", q:get())
  end)

  it("JoinableQueue: join waits until every item is done, in another process", function()
    local m <close> = lmp.Manager()
    local q, done = m:JoinableQueue(), m:list()
    for i = 1, 3 do q:put(i) end
    local p = start(function(queue, list)
      for _ = 1, 3 do
        list:append(queue:get())
        queue:task_done()
      end
    end, q, done)
    q:join()
    assert.equal(3, #done)
    assert.equal(0, joined(p))
    assert.equal("value", failure(q.task_done, q).kind)
  end)

  it("a waiting request holds up no other client", function()
    local m <close> = lmp.Manager()
    local q, d = m:Queue(), m:dict()
    local p = start(function(queue, dict)
      dict:set("waiting", true)
      dict:set("got", queue:get())
    end, q, d)
    assert.is_true(helpers.wait_for(function() return d:get("waiting") end, 20))
    os.execute("sleep 0.1")
    for i = 1, 20 do d:set(i, i) end -- while the child waits in get
    assert.equal(21, d:len())
    q:put("late")
    assert.equal(0, joined(p))
    assert.equal("late", d:get("got"))
  end)

  it("Lock: another process waits for the release; acquire(false) and timeouts", function()
    local m <close> = lmp.Manager()
    local lock, d = m:Lock(), m:dict()
    assert.is_true(lock:acquire())
    assert.is_true(lock:locked())
    local p = start(function(l, dict)
      dict:set("try", l:acquire(false))
      dict:set("timed", l:acquire(true, 0.05))
      dict:set("ready", true)
      dict:set("waited", l:acquire())
      l:release()
    end, lock, d)
    assert.is_true(helpers.wait_for(function() return d:get("ready") end, 20))
    assert.is_false(d:get("try"))
    assert.is_false(d:get("timed"))
    lock:release()
    assert.equal(0, joined(p))
    assert.is_true(d:get("waited"))
    assert.is_false(lock:locked())
    assert.equal("closed", failure(lock.release, lock).kind)
  end)

  it("a Lock whose holder dies is released: the next acquire gets it and is told", function()
    local m <close> = lmp.Manager()
    local lock, d = m:Lock(), m:dict()
    local p = start(function(l, dict)
      l:acquire()
      dict:set("held", true)
      require("lmp").sleep(60)
    end, lock, d)
    assert.is_true(helpers.wait_for(function() return d:get("held") end, 20))
    assert.is_false(lock:acquire(false))
    p:kill()
    p:join()
    local ok, how = lock:acquire(true, 10)
    assert.is_true(ok)
    assert.equal("owner_died", how)
    lock:release()
    assert.same({true, nil}, {lock:acquire(true, 1)})
  end)

  it("RLock: recursive for its holder, refused to another process", function()
    local m <close> = lmp.Manager()
    local r = m:RLock()
    assert.is_true(r:acquire())
    assert.is_true(r:acquire())
    local p = start(function(lock)
      assert(lock:acquire(true, 0.05) == false)
      local ok, err = pcall(lock.release, lock)
      assert(not ok and err.kind == "closed", tostring(err))
    end, r)
    assert.equal(0, joined(p))
    r:release()
    assert.is_true(r:locked())
    r:release()
    assert.is_false(r:locked())
  end)

  it("Semaphore and BoundedSemaphore across processes", function()
    local m <close> = lmp.Manager()
    local s, b = m:Semaphore(0), m:BoundedSemaphore(1)
    local p = start(function(sem) sem:release(2) end, s)
    assert.is_true(s:acquire(true, 20))
    assert.is_true(s:acquire(true, 20))
    assert.is_false(s:acquire(true, 0.05))
    assert.equal(0, joined(p))
    assert.is_true(b:acquire(false))
    assert.is_false(b:acquire(false))
    b:release()
    assert.equal(1, b:get_value())
    assert.equal("value", failure(b.release, b).kind)
  end)

  it("Event: a waiter in another process wakes when it is set", function()
    local m <close> = lmp.Manager()
    local e, d = m:Event(), m:dict()
    local p = start(function(event, dict)
      dict:set("timed", event:wait(0.05))
      dict:set("woke", event:wait(30))
    end, e, d)
    assert.is_true(helpers.wait_for(function() return d:contains("timed") end, 20))
    assert.is_false(d:get("timed"))
    e:set()
    assert.equal(0, joined(p))
    assert.is_true(d:get("woke"))
    assert.is_true(e:is_set())
    e:clear()
    assert.is_false(e:wait(0))
  end)

  it("Condition: wait, notify, wait_for across processes", function()
    local m <close> = lmp.Manager()
    local c, d = m:Condition(), m:dict({n = 0})
    local p = start(function(cond, dict)
      cond:acquire()
      dict:set("waiting", true)
      local ok = cond:wait_for(function() return dict:get("n") >= 2 end, 30)
      dict:set("seen", dict:get("n"))
      cond:release()
      assert(ok)
    end, c, d)
    assert.is_true(helpers.wait_for(function() return d:get("waiting") end, 20))
    for _ = 1, 2 do
      c:acquire()
      d:add("n", 1)
      c:notify()
      c:release()
    end
    assert.equal(0, joined(p))
    assert.equal(2, d:get("seen"))
    c:acquire()
    assert.is_false(c:wait(0.05))
    c:notify_all()
    c:release()
    assert.equal("closed", failure(c.notify, c).kind)
    -- With a lock of the manager's own.
    local lock = m:Lock()
    local c2 = m:Condition(lock)
    c2:acquire()
    assert.is_true(lock:locked())
    c2:release()
  end)

  it("Barrier: parties in three processes, timeouts break it, abort and reset", function()
    local m <close> = lmp.Manager()
    local b, d = m:Barrier(3), m:dict()
    assert.equal(3, b.parties)
    local ps = {}
    for i = 1, 2 do
      ps[i] = start(function(barrier, dict, k) dict:set(k, barrier:wait(30)) end, b, d, i)
    end
    local mine = b:wait(30)
    for i = 1, 2 do assert.equal(0, joined(ps[i])) end
    local indices = {mine, d:get(1), d:get(2)}
    table.sort(indices)
    assert.same({0, 1, 2}, indices)
    assert.equal("broken_barrier", failure(b.wait, b, 0.05).kind)
    assert.is_true(b.broken)
    b:reset()
    assert.is_false(b.broken)
    assert.equal(0, b.n_waiting)
    b:abort()
    assert.equal("broken_barrier", failure(b.wait, b).kind)
  end)

  it("a party that dies while it waits breaks the barrier", function()
    local m <close> = lmp.Manager()
    local b = m:Barrier(2)
    local p = start(function(barrier) barrier:wait() end, b)
    assert.is_true(helpers.wait_for(function() return b.n_waiting == 1 end, 20))
    p:kill()
    p:join()
    assert.is_true(helpers.wait_for(function() return b.broken end, 10))
  end)

  it("Value, Array and Namespace from pool workers", function()
    local m <close> = lmp.Manager()
    local v, a, ns = m:Value("i", 1), m:Array("d", {0.5, 1.5}), m:Namespace({x = 1})
    local pool <close> = lmp.Pool(2)
    pool:map(function(i)
      v:set(v:get() + 1)
      a[i] = i * 10
      ns["k" .. i] = {i}
    end, {1, 2}, 1)
    assert.is_true(v.value >= 2)
    assert.same({2}, ns.k2)
    assert.equal(2, #a)
    assert.same({10.0, 20.0, n = 2}, a:tolist())
    assert.equal(20.0, a[2])
    assert.is_nil(a[3])
    assert.equal("index", failure(a.get, a, 3).kind)
    v.value = 42
    assert.equal(42, v.value)
    assert.equal("value", failure(v.set, v, 2 ^ 40).kind)
    assert.equal("value", failure(a.set, a, 1, "x").kind)
    assert.equal(1, ns.x)
    ns.x = nil
    assert.is_nil(ns.x)
  end)

  it("register: a user's type, its methods called from other processes", function()
    local m <close> = lmp.BaseManager()
    local step = 10 -- an upvalue: the constructor travels with it
    m:register("Counter", function(start_at)
      local c = {n = start_at or 0}
      function c:add(k) self.n = self.n + (k or step); return self.n end
      function c:value() return self.n end
      function c._secret() return "hidden" end
      function c.thread() return coroutine.create(print) end
      return c
    end)
    m:start()
    local counter = m:Counter(5)
    assert.equal(15, counter:add())
    local pool <close> = lmp.Pool(2)
    pool:map(function() counter:add(1) end, {1, 2, 3, 4}, 1)
    assert.equal(19, counter:value())
    assert.equal(19, counter:_callmethod("value"))
    assert.matches("no method", tostring(failure(counter._callmethod, counter, "_secret")))
    -- Arguments are plain data: code is refused, never run.
    assert.matches("request refused", tostring(failure(counter.add, counter, function() end)))
    -- A result that cannot be sent fails that call, not the connection.
    assert.equal("serialize", failure(counter.thread, counter).kind)
    assert.equal(19, counter:value())
    assert.has_error(function() m:register("Late", function() return {} end) end)
  end)

  it("connect: a second manager object reaches a running manager with its key", function()
    local m <close> = lmp.Manager{authkey = "shared key"}
    local d = m:dict()
    local p = start(function(address)
      local lmp = require "lmp"
      local other = lmp.BaseManager{address = address, authkey = "shared key"}:connect()
      other:dict({from = "child"})
      local q = other:Queue()
      q:put(1)
      local bad = lmp.BaseManager{address = address, authkey = "wrong"}
      local ok, err = pcall(bad.connect, bad)
      assert(not ok and tostring(err):match("authentication failed"), tostring(err))
      other:shutdown() -- a connected manager only lets go
    end, m.address)
    assert.equal(0, joined(p))
    d:set("still", "served")
    assert.equal("served", d:get("still"))
  end)

  it("a manager killed under a client: its calls raise kind closed, no hang", function()
    local m <close> = lmp.Manager()
    local q, d = m:Queue(), m:dict()
    local p = start(function(queue, dict)
      dict:set("waiting", true)
      local ok, err = pcall(queue.get, queue) -- waits: nothing is put
      assert(not ok and err.kind == "closed", tostring(err))
      os.exit(7)
    end, q, d)
    assert.is_true(helpers.wait_for(function() return d:get("waiting") end, 20))
    os.execute("sleep 0.2")
    os.execute("kill -KILL " .. m.pid)
    assert.equal(7, joined(p))
    local err = failure(d.get, d, "x")
    assert.equal("closed", err.kind)
    assert.matches("is gone", err.message)
  end)

  it("a client that dies waiting takes nothing: the item goes to the next getter", function()
    local m <close> = lmp.Manager()
    local q = m:Queue()
    local getters = {}
    for i = 1, 3 do getters[i] = start(function(queue) queue:get() end, q) end
    os.execute("sleep 0.5")
    -- Put as soon as they are dead: the manager may read the puts before
    -- it reads the ends of their connections.
    for i = 1, 3 do getters[i]:kill() end
    for i = 1, 3 do getters[i]:join() end
    for i = 1, 3 do q:put(i) end
    local got = {}
    for i = 1, 3 do got[i] = q:get(true, 10) end
    assert.same({1, 2, 3}, got)
  end)

  it("after shutdown its proxies raise kind closed; its process and socket are gone", function()
    local m = lmp.Manager()
    local d = m:dict()
    local path, pid = m.path, m.pid
    local pool <close> = lmp.Pool(1)
    m:shutdown()
    assert.is_nil(io.open(path))
    assert.is_false(helpers.alive(pid))
    local ok, err = pcall(pool.apply, pool, function(proxy) return proxy:get("x") end, {d})
    assert.is_false(ok)
    assert.matches("manager", tostring(err))
    assert.equal("closed", failure(d.get, d, "x").kind)
    assert.has_error(function() m:dict() end)
    m:shutdown() -- twice is fine
  end)

  it("ends when collected, and with <close>", function()
    local pid, dir
    do
      local m <close> = lmp.Manager()
      pid = m.pid
    end
    assert.is_false(helpers.alive(pid))
    do
      local m = lmp.Manager()
      pid, dir = m.pid, m.dir
    end
    collectgarbage()
    collectgarbage()
    assert.is_false(helpers.alive(pid))
    assert.is_nil(require("lfs").attributes(dir))
  end)

  it("a manager collected before the script ends holds up nothing at exit", function()
    -- Its process is killed from the finalizer: the exit must neither wait
    -- for it nor try to kill it again.
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      do local m = lmp.Manager(); m:dict():set("k", 1) end
      collectgarbage(); collectgarbage()
      print("done")
    ]], "timeout 60 " .. helpers.runner)
    assert.equal("done\n", out)
    assert.equal("", err)
    assert.equal(0, status)
  end)

  it("ends with the script that made it: SIGKILL leaves no manager process, no directory", function()
    local p = assert(io.popen("exec lua5.4 -e '"
      .. "local m = require(\"lmp\").Manager(); m:dict(); "
      .. "print(require(\"lmp.core\").getpid(), m.pid, m.dir); io.stdout:flush(); "
      .. "while true do end'"))
    local script, server, dir = p:read("l"):match("^(%d+)%s+(%d+)%s+(%S+)")
    assert.is_truthy(script)
    assert.is_true(helpers.alive(server))
    os.execute("kill -KILL " .. script)
    p:read("a")
    p:close()
    assert.is_true(helpers.wait_for(function() return not helpers.alive(server) end, 5),
                   "the manager process outlived its parent")
    assert.is_true(helpers.wait_for(function() return require("lfs").attributes(dir) == nil end, 5),
                   "the private directory was left behind")
  end)
end)

-- A module the script loaded: a forked manager's process has it, a spawned
-- one or one from the forkserver has not.
package.loaded["manager_spec_marker"] = true

-- How process pid was started, read from its command line: a worker
-- executable's ("spawn"), a copy of the forkserver's ("forkserver"), or a
-- copy of this script's ("fork": no worker's command line).
local function started_as(pid)
  local line = helpers.read_file("/proc/" .. pid .. "/cmdline")
  if not line:find("--lmp-worker", 1, true) then return "fork" end
  return line:find("forkserver", 1, true) and "forkserver" or "spawn"
end

-- Bytes as hexadecimal, to pass them on a command line, and back.
local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

describe("Manager start methods, TCP, foreground server, Barrier action", function()
  after_each(function()
    core.forkserver_stop()
    assert.is_true(helpers.no_children())
  end)

  it("a context's Manager starts its process with the context's method: spawn, fork, forkserver",
     function()
    for _, method in ipairs({"spawn", "fork", "forkserver"}) do
      local base = lmp.BaseManager{context = lmp.get_context(method)}
      base:register("Probe", function()
        return {marker = function() return package.loaded["manager_spec_marker"] == true end}
      end)
      local m <close> = base:start()
      assert.equal(method, started_as(m.pid))
      assert.equal(method == "fork", m:Probe():marker(), method)
      -- ctx.Manager() is lmp.Manager() with the context's method.
      local m2 <close> = lmp.get_context(method).Manager()
      assert.equal(1, m2:dict({x = 1}):get("x"))
      assert.equal(method, started_as(m2.pid))
      assert.equal(method, m2.start_method)
    end
    assert.has_error(function() lmp.Manager{start_method = "nope"} end)
  end)

  for _, method in ipairs({"fork", "forkserver"}) do
    it("a manager started with " .. method .. " serves Processes and pool workers started after "
       .. "it, of every method; shutdown leaves no process, descriptor or socket", function()
      local fds = helpers.open_fds()
      -- A pool already running when the manager starts: a forked manager
      -- must not keep its workers' channels open (close_from).
      local early = lmp.Pool{processes = 1, start_method = method}
      assert.equal(2, early:apply(function() return 2 end))
      local m = lmp.Manager{start_method = method}
      assert.equal(method, started_as(m.pid))
      local d, q, lock = m:dict(), m:Queue(), m:Lock()
      local server, path, dir = m.pid, m.address, m.dir
      for _, child in ipairs({"spawn", "fork", "forkserver"}) do
        local p = lmp.Process{target = function(d, q, lock, child)
          assert(lock:acquire(true, 20))
          d:set(child, "process")
          lock:release()
          q:put(child)
        end, args = {d, q, lock, child}, start_method = child}
        p:start()
        assert.equal(child, q:get(true, 30))
        assert.equal(0, joined(p))
        assert.equal("process", d:get(child))
        -- A pool worker: the dict through initargs, the queue as an
        -- argument, the lock back as a result.
        local pool <close> = lmp.Pool{processes = 2, start_method = child,
          initializer = function(dict) MANAGER_SPEC_DICT = dict end, initargs = {d}}
        local back = pool:starmap(function(queue, l)
          MANAGER_SPEC_DICT:add("n", 1)
          queue:put("from a worker")
          return l
        end, {{q, lock}, {q, lock}, {q, lock}}, 1)
        for i = 1, 3 do
          assert.equal("from a worker", q:get(true, 30))
          assert.equal(lock, back[i])
        end
        pool:close(); pool:join()
      end
      assert.equal(9, d:get("n"))
      early:close(); early:join()
      m:shutdown()
      assert.is_false(helpers.alive(server))
      assert.is_nil(io.open(path))
      assert.is_nil(require("lfs").attributes(dir))
      d, q, lock = nil, nil, nil
      -- The forkserver stays for later processes (as CPython's does), with
      -- a socket and a pidfd here: stopped, nothing of this test is left.
      core.forkserver_stop()
      assert.equal(fds, helpers.open_fds())
    end)
  end

  it("serves on TCP: a process started from the shell connects and shares a dict and a queue",
     function()
    local m <close> = lmp.Manager{address = {"127.0.0.1", 0}, authkey = "a shared secret"}
    local host, port = m.address[1], m.address[2]
    assert.equal("127.0.0.1", host)
    assert.is_true(math.type(port) == "integer" and port > 0)
    local d, q = m:dict({seen = 0}), m:Queue()
    q:put("from the main process")
    -- The outside process gets the shared objects as values (proxies
    -- travel as any value does), and makes one of its own after connect().
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      local host, port, shared = ...
      shared = lmp.loads((shared:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)))
      local d, q = shared[1], shared[2]
      local m = lmp.BaseManager{address = {host, math.tointeger(port)}, authkey = "a shared secret"}
      m:connect()
      d:set("seen", d:get("seen") + 1)
      d:set("pid", require("lmp.core").getpid())
      q:put(m:list({1, 2, 3}))
      print(q:get(true, 30))
      local wrong = lmp.BaseManager{address = {host, math.tointeger(port)}, authkey = "not it"}
      local ok, e = pcall(wrong.connect, wrong)
      print(ok, e.kind)
    ]], "timeout 60 lua5.4", ("%s %d %s"):format(host, port, hex(lmp.dumps({d, q}))))
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("from the main process\nfalse\tauth\n", out)
    assert.equal(1, d:get("seen"))
    assert.are_not.equal(core.getpid(), d:get("pid"))
    local list = q:get(true, 10)
    assert.same({1, 2, 3}, {table.unpack(list:copy(), 1, 3)})
    assert.equal(3, #list)
  end)

  it("get_server():serve_forever() serves in the foreground until shutdown_server() or SIGTERM",
     function()
    -- The server is a script of its own, as a Python user runs one.
    local script = [[
      local lmp = require "lmp"
      local m = lmp.BaseManager{address = {"127.0.0.1", 0}, authkey = "fg key"}
      m:register("Echo", function() return {echo = function(_, x) return x end} end)
      local server = m:get_server()
      print(require("lmp.core").getpid(), server.address[2]); io.stdout:flush()
      print(server:serve_forever()); io.stdout:flush()
    ]]
    local function serve()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(script)
      f:close()
      local p = assert(io.popen("exec timeout 60 lua5.4 " .. path))
      local pid, port = p:read("l"):match("^(%d+)%s+(%d+)$")
      pid, port = math.tointeger(tonumber(pid)), math.tointeger(tonumber(port))
      os.remove(path)
      return p, pid, port
    end
    -- Stopped by a client.
    local p, _, port = serve()
    local m = lmp.BaseManager{address = {"127.0.0.1", port}, authkey = "fg key"}:connect()
    assert.equal("hi", m:Echo():echo("hi"))
    local d = m:dict()
    d:set("k", "v")
    assert.equal("v", d:get("k"))
    m:shutdown_server()
    assert.equal("shutdown\n", p:read("a"))
    assert.is_true(p:close())
    assert.equal("closed", failure(d.get, d, "k").kind)
    -- Stopped by SIGTERM, and by SIGINT, while a client waits on it.
    for _, signal in ipairs({"TERM", "INT"}) do
      local p2, pid, port2 = serve()
      local m2 = lmp.BaseManager{address = {"127.0.0.1", port2}, authkey = "fg key"}:connect()
      local q = m2:Queue()
      local waiter = start(function(queue)
        local ok, e = pcall(queue.get, queue, true, 30)
        os.exit(not ok and e.kind == "closed" and 0 or 1)
      end, q)
      assert.is_true(helpers.wait_for(function() return q:qsize() == 0 end, 10))
      lmp.sleep(0.2)
      os.execute("kill -" .. signal .. " " .. pid)
      assert.equal("SIG" .. signal .. "\n", p2:read("a"))
      assert.is_true(p2:close())
      assert.equal(0, joined(waiter))
    end
  end)

  it("Barrier(parties, action, timeout): the action runs once per round, before any party goes",
     function()
    local m <close> = lmp.Manager()
    local log = m:list()
    local b = m:Barrier(3, function() log:append("action") end, 30)
    local ps = {}
    for i = 1, 2 do
      ps[i] = start(function(barrier, l)
        for round = 1, 3 do
          barrier:wait()
          l:append(round)
        end
      end, b, log)
    end
    for round = 1, 3 do
      b:wait()
      log:append(round)
    end
    for i = 1, 2 do assert.equal(0, joined(ps[i])) end
    -- Each round: its action first, then the three parties.
    local got = log:copy()
    assert.equal(12, #log)
    for round = 1, 3 do
      local at = (round - 1) * 4
      assert.equal("action", got[at + 1])
      assert.same({round, round, round}, {got[at + 2], got[at + 3], got[at + 4]})
    end
    -- An action that raises: its party gets the error, the others kind "broken_barrier".
    local bad = m:Barrier(2, function() error("the action failed", 0) end)
    local other = start(function(barrier)
      local ok, e = pcall(barrier.wait, barrier, 30)
      os.exit(not ok and (e.kind == "broken_barrier" or tostring(e):find("the action failed")) and 0 or 1)
    end, bad)
    local ok, e = pcall(bad.wait, bad, 30)
    assert.equal(0, joined(other))
    assert.is_false(ok)
    assert.is_true(e.kind == "broken_barrier" or tostring(e):find("the action failed") ~= nil)
    assert.is_true(bad.broken)
    assert.has_error(function() m:Barrier(2, 5) end)
  end)

  it("a party killed while it runs the action breaks the barrier: the others are let go", function()
    local m <close> = lmp.Manager()
    local d = m:dict()
    local b = m:Barrier(2, function()
      d:set("acting", require("lmp.core").getpid())
      require("lmp").sleep(60)
    end)
    local party = function(barrier)
      local ok, e = pcall(barrier.wait, barrier, 60)
      os.exit(not ok and e.kind == "broken_barrier" and 0 or 1)
    end
    local ps = {start(party, b), start(party, b)}
    assert.is_true(helpers.wait_for(function() return d:get("acting") ~= nil end, 30))
    local acting, other = ps[1], ps[2]
    if acting.pid ~= d:get("acting") then acting, other = other, acting end
    assert.equal(d:get("acting"), acting.pid)
    assert.is_false(b.broken)
    acting:kill()
    acting:join()
    assert.equal(0, joined(other))
    assert.is_true(b.broken)
  end)
end)
