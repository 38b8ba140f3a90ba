-- CPython's Lib/test/_test_multiprocessing.py, the manager tests
-- (_TestContainers, TestSyncManagerTypes, _TestMyManager,
-- _TestRemoteManager, _TestManagerRestart), translated to lmp.Manager and
-- lmp.BaseManager. Python's proxies take Python
-- syntax (d[k] = v, l[i], len(l)); lmp's take methods (d:set(k, v),
-- l:get(i), #l), with list indexes from 1. tests/peer/README.md says
-- what was ported and what differs.
local describe, it, setup, teardown, after_each, pending, assert, pcall =
  describe, it, setup, teardown, after_each, pending, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local function range(n)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = i end
  return t
end

local function plain(t)
  local r = {}
  for i = 1, t.n or #t do r[i] = t[i] end
  return r
end

describe("peer: _TestContainers", function()
  local m
  setup(function() m = lmp.Manager() end)
  teardown(function() m:shutdown() end)

  it("test_list", function()
    local a = m:list(range(10))
    assert.same(range(10), plain(a:copy()))
    local b = m:list()
    assert.same({}, plain(b:copy()))
    b:extend(range(5))
    assert.same(range(5), plain(b:copy()))
    assert.equal(2, b:get(3))
    b:extend(b:copy()) -- Python's b *= 2
    assert.same({0, 1, 2, 3, 4, 0, 1, 2, 3, 4}, plain(b:copy()))
    assert.same(range(10), plain(a:copy()))
    -- Proxies inside a managed list stay proxies of the same objects.
    local e = m:list({a, b})
    assert.same(range(10), plain(e:get(1):copy()))
    assert.same({0, 1, 2, 3, 4, 0, 1, 2, 3, 4}, plain(e:get(2):copy()))
    local f = m:list({a})
    a:append("hello")
    local expected = range(10)
    expected[11] = "hello"
    assert.same(expected, plain(f:get(1):copy()))
  end)

  it("test_list_proxy_in_list", function()
    local a = m:list({m:list(range(3)), m:list(range(3)), m:list(range(3))})
    for i = 1, 3 do assert.same({0, 1, 2}, plain(a:get(i):copy())) end
    a:get(1):set(3, 55)
    assert.same({0, 1, 55}, plain(a:get(1):copy()))
    for i = 2, 3 do assert.same({0, 1, 2}, plain(a:get(i):copy())) end
    assert.equal(2, a:get(2):pop())
    assert.equal(2, #a:get(2))
    assert.equal(3, #a:get(1))
    assert.equal(3, #a:get(3))
    local b = m:list()
    b:append(b)
    assert.equal(1, #b:get(1))
  end)

  it("test_dict", function()
    local d = m:dict()
    local indices = {65, 66, 67, 68, 69}
    for _, i in ipairs(indices) do d:set(i, string.char(i)) end
    local copy = {}
    for _, i in ipairs(indices) do copy[i] = string.char(i) end
    assert.same(copy, d:copy())
    local keys = d:keys(); table.sort(keys)
    assert.same(indices, keys)
    local values = d:values(); table.sort(values)
    assert.same({"A", "B", "C", "D", "E"}, values)
    local items = d:items()
    table.sort(items, function(x, y) return x[1] < y[1] end)
    assert.same({{65, "A"}, {66, "B"}, {67, "C"}, {68, "D"}, {69, "E"}}, items)
  end)

  it("test_dict_proxy_nested", function()
    local pets = m:dict({ferrets = 2, hamsters = 4})
    local supplies = m:dict({water = 10, feed = 3})
    local d = m:dict({pets = pets, supplies = supplies})
    assert.equal(10, supplies:get("water"))
    assert.equal(10, d:get("supplies"):get("water"))
    d:get("supplies"):set("blankets", 5)
    assert.equal(5, supplies:get("blankets"))
    assert.equal(5, d:get("supplies"):get("blankets"))
    d:get("supplies"):set("water", 7)
    assert.equal(7, supplies:get("water"))
    pets, supplies = nil, nil
    collectgarbage()
    assert.equal(2, d:get("pets"):get("ferrets"))
    d:get("supplies"):set("blankets", 11)
    assert.equal(11, d:get("supplies"):get("blankets"))
    pets, supplies = d:get("pets"), d:get("supplies")
    local l = m:list({pets, supplies})
    l:get(1):set("marmots", 1)
    assert.equal(1, pets:get("marmots"))
    assert.equal(1, l:get(1):get("marmots"))
    local outer = m:list({{88, 99}, l})
    assert.same({88, 99}, outer:get(1)) -- a plain table, not a proxy
    assert.equal(3, outer:get(2):get(2):get("feed"))
  end)
end)

describe("peer: TestSyncManagerTypes", function()
  local m
  setup(function() m = lmp.Manager() end)
  teardown(function() m:shutdown() end)
  -- The manager's process is the only child left between tests.
  after_each(function()
    assert.is_true(helpers.wait_for(function()
      collectgarbage()
      local kids = helpers.children()
      return #kids == 1 and kids[1] == m.pid
    end, 5))
  end)

  -- Python's run_worker: the child works on the proxy, then exits 0.
  local function run_worker(worker, object)
    local p = lmp.Process{target = worker, args = {object}, daemon = true}
    p:start()
    p:join(30)
    assert.equal(0, p.exitcode)
  end

  it("test_list", function()
    local o = m:list()
    o:append(5)
    run_worker(function(obj)
      assert(obj:get(1) == 5)
      assert(#obj == 1)
      obj:extend({7})
      local copy = obj:copy()
      assert(copy[1] == 5 and copy[2] == 7 and copy.n == 2)
      obj:extend(copy)
      assert(#obj == 4)
      assert(obj:pop(1) == 5)
      while #obj > 0 do obj:pop() end
    end, o)
    assert.equal(0, #o)
  end)

  it("test_dict", function()
    local o = m:dict()
    o:set("foo", 5)
    run_worker(function(obj)
      assert(#obj == 1)
      assert(obj:get("foo") == 5)
      local items = obj:items()
      assert(items[1][1] == "foo" and items[1][2] == 5)
      assert(obj:keys()[1] == "foo" and obj:values()[1] == 5)
      obj:update({bar = 6})
      assert(obj:copy().bar == 6)
      assert(obj:pop("bar") == 6)
      obj:pop("foo")
    end, o)
    assert.equal(0, #o)
  end)

  it("test_dict from a pool worker (beyond Python: proxies go to pool workers as arguments)", function()
    local o = m:dict()
    local pool <close> = lmp.Pool(2)
    pool:map(function(word) o:add(word, 1) end, {"a", "b", "a"})
    assert.equal(2, o:get("a"))
    assert.equal(1, o:get("b"))
  end)
end)

describe("peer: _TestContainers, iteration and other types", function()
  local m
  setup(function() m = lmp.Manager() end)
  teardown(function() m:shutdown() end)

  it("test_list_iter", function()
    local a = m:list(range(10))
    local got = {}
    for i, v in ipairs(a) do got[i] = v end
    assert.same(range(10), got)
  end)

  it("test_dict_iter", function()
    local d = m:dict()
    for i = 0, 9 do d:set(i, i * i) end
    local keys = {}
    for k in pairs(d) do keys[#keys + 1] = k end
    assert.same(range(10), keys) -- in insertion order, as Python's
  end)

  it("test_nested_queue", function()
    local a = m:list()
    a:append(m:Queue())
    a:get(1):put(123)
    assert.equal(123, a:get(1):get())
    local b = m:dict()
    b:set(0, m:Queue())
    b:get(0):put(456)
    assert.equal(456, b:get(0):get())
  end)

  it("test_namespace", function()
    local n = m:Namespace()
    n.name = "Bob"
    n.job = "Builder"
    n._hidden = "hidden" -- the proxy's own, as Python's _-names
    assert.equal("Bob", n.name)
    assert.equal("Builder", n.job)
    assert.is_nil(rawget(n, "name"))
    n.job = nil -- Python's del n.job
    assert.is_nil(n.job)
    local seen = {}
    for k, v in pairs(n) do seen[k] = v end
    assert.same({name = "Bob"}, seen)
  end)
end)

describe("peer: TestSyncManagerTypes, the other types", function()
  local m
  setup(function() m = lmp.Manager() end)
  teardown(function() m:shutdown() end)
  after_each(function()
    assert.is_true(helpers.wait_for(function()
      collectgarbage()
      local kids = helpers.children()
      return #kids == 1 and kids[1] == m.pid
    end, 5))
  end)

  local function run_worker(worker, object)
    local p = lmp.Process{target = worker, args = {object}, daemon = true}
    p:start()
    p:join(30)
    assert.equal(0, p.exitcode)
  end

  it("test_event", function()
    local o = m:Event()
    o:set()
    run_worker(function(obj)
      assert(obj:is_set())
      assert(obj:wait(1))
      assert(obj:wait())
    end, o)
  end)

  it("test_lock, test_rlock", function()
    for _, o in ipairs({m:Lock(), m:RLock()}) do
      run_worker(function(obj)
        assert(obj:acquire())
        assert(obj:locked())
        obj:release()
        assert(not obj:locked())
      end, o)
    end
  end)

  it("test_semaphore, test_bounded_semaphore", function()
    for _, o in ipairs({m:Semaphore(), m:BoundedSemaphore()}) do
      run_worker(function(obj)
        assert(obj:acquire())
        obj:release()
      end, o)
    end
  end)

  it("test_condition", function()
    local o = m:Condition()
    run_worker(function(obj)
      obj:acquire()
      obj:release()
    end, o)
  end)

  it("test_barrier", function()
    local o = m:Barrier(5)
    run_worker(function(obj)
      assert(obj.parties == 5)
      assert(obj:reset() == nil)
    end, o)
  end)

  it("test_queue, test_joinable_queue", function()
    for _, o in ipairs({m:Queue(2), m:JoinableQueue(2)}) do
      o:put(5)
      o:put(6)
      run_worker(function(obj)
        assert(obj:qsize() == 2)
        assert(obj:full())
        assert(not obj:empty())
        assert(obj:get() == 5)
        assert(obj:get() == 6)
        assert(obj:empty())
      end, o)
    end
  end)

  it("test_value", function()
    local o = m:Value("i", 1)
    run_worker(function(obj)
      assert(obj.value == 1)
      assert(obj:get() == 1)
      obj:set(2)
    end, o)
    assert.equal(2, o.value)
    assert.equal(2, o:get())
  end)

  it("test_array", function()
    local o = m:Array("i", {0, 1})
    run_worker(function(obj)
      assert(obj[1] == 0)
      assert(obj[2] == 1)
      assert(#obj == 2)
      local l = obj:tolist()
      assert(l[1] == 0 and l[2] == 1)
    end, o)
  end)

  it("test_namespace", function()
    local o = m:Namespace()
    o.x = 0
    o.y = 1
    run_worker(function(obj)
      assert(obj.x == 0)
      assert(obj.y == 1)
    end, o)
  end)
end)

describe("peer: _TestMyManager, _TestRemoteManager", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_mymanager: a registered type, its public methods only", function()
    local m = lmp.BaseManager()
    m:register("Foo", function()
      return {f = function() return "f()" end, g = function() error("g()") end,
              _h = function() return "_h()" end}
    end)
    m:start()
    local foo = m:Foo()
    assert.equal("f()", foo:f())
    local ok, err = pcall(foo.g, foo)
    assert.is_false(ok)
    assert.matches("g%(%)", tostring(err))
    assert.is_nil(foo._h)
    assert.is_false(pcall(foo._callmethod, foo, "_h"))
    m:shutdown()
    assert.is_false(helpers.alive(m.pid))
  end)

  it("test_remote: a second manager connects by address and key", function()
    local m <close> = lmp.Manager{authkey = "abc"}
    local queue_of_m = m:Queue()
    local other = lmp.BaseManager{address = m.address, authkey = "abc"}:connect()
    local q = other:Queue()
    q:put({"hello world", 42})
    assert.same({"hello world", 42}, q:get())
    queue_of_m:put(1)
    assert.equal(1, queue_of_m:get())
  end)
end)

describe("peer: _TestManagerRestart", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  -- Python's QueueManager: get_queue gives every client the one queue of
  -- the manager's process (a global there).
  local function queue_manager(address, authkey)
    local m = lmp.BaseManager{address = address, authkey = authkey}
    m:register("get_queue", function()
      SERVER_QUEUE = SERVER_QUEUE or {items = {},
        put = function(self, x) self.items[#self.items + 1] = x end,
        get = function(self) return table.remove(self.items, 1) end}
      return SERVER_QUEUE
    end)
    return m
  end

  it("test_rapid_restart: a manager starts again at once on the address of one shut down", function()
    local authkey = "rapid restart key"
    local manager = queue_manager({"127.0.0.1", 0}, authkey):start()
    local address = manager.address
    assert.is_true(address[2] > 0)
    local p = lmp.Process{target = function(addr, key)
      local m = require("lmp").BaseManager{address = addr, authkey = key}:connect()
      m:get_queue():put("hello world")
    end, args = {address, authkey}}
    p:start()
    p:join()
    assert.equal(0, p.exitcode)
    assert.equal("hello world", manager:get_queue():get())
    manager:shutdown()
    -- Python retries once after a second on EADDRINUSE; lmp's listener
    -- reuses the address at once.
    manager = queue_manager(address, authkey):start()
    assert.same(address, manager.address)
    assert.is_nil(manager:get_queue():get())
    manager:shutdown()
  end)
end)
