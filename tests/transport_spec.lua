-- The transport registry (docs/architecture.md, "How to add a transport"):
-- a pool starts its workers through the transport its start_method names.
local describe, it, assert, pcall = describe, it, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local workers = require "lmp.workers"
local core = require "lmp.core"
local helpers = require "helpers"
helpers.build_crash_module() -- tests/c/crash.c: its tasks crash on purpose
local double = require "transport_double"

local function busy(seconds)
  local t = os.clock()
  while os.clock() - t < seconds do end
end

describe("the transport registry", function()
  it("has spawn and fork registered, in that order", function()
    local names = workers.transports()
    assert.equal("spawn", names[1])
    assert.equal("fork", names[2])
    assert.is_true(workers.has_transport("spawn"))
    assert.is_false(workers.has_transport("telepathy"))
  end)

  it("starts a pool's workers through the transport its start_method names", function()
    local started, seen = 0, nil
    workers.register_transport("counting-spawn", function(on_message, on_exit, options)
      started = started + 1
      seen = options
      return workers.spawn(on_message, on_exit)
    end)
    local options = {label = "mine"}
    local pool <close> = lmp.Pool{processes = 2, start_method = "counting-spawn",
                                  start_options = options}
    assert.equal(2, started)
    assert.equal(options, seen)
    assert.same({1, 4, 9, n = 3}, pool:map(function(x) return x * x end, {1, 2, 3}))
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1, start_method = "counting-spawn"}
    assert.equal(6, ex:submit(function(x) return x * 2 end, 3):result())
    assert.equal(3, started)
    assert.is_nil(seen)
    lmp.set_start_method("counting-spawn")
    local ok, err = pcall(function()
      local p <close> = lmp.Pool(1)
      assert.equal("counting-spawn", p.start_method)
    end)
    lmp.set_start_method("spawn")
    assert.is_true(ok, err)
  end)

  it("starts every worker of a pool before it sends any its init", function()
    -- The transport records each start and each message sent, through a
    -- handle that forwards every call to the real one.
    local events = {}
    local function recording(inner)
      return setmetatable({}, {__index = function(_, name)
        local method = inner[name]
        if type(method) ~= "function" then return method end
        return function(_, message, ...)
          if name == "send" then
            events[#events + 1] = "send " .. tostring(type(message) == "table" and message[1])
          end
          return method(inner, message, ...)
        end
      end})
    end
    for _, method in ipairs{"spawn", "fork"} do
      events = {}
      workers.register_transport("recording-" .. method, function(on_message, on_exit)
        events[#events + 1] = "start"
        local inner = method == "fork" and core.fork_worker(on_message, on_exit)
          or workers.spawn(on_message, on_exit)
        return recording(inner)
      end)
      local pool <close> = lmp.Pool{processes = 3, start_method = "recording-" .. method}
      assert.same({"start", "start", "start", "send init", "send init", "send init"}, events)
      assert.equal(7, pool:apply(function(x) return x + 1 end, {6}))
    end
    assert.is_true(helpers.no_children())
  end)

  it("a built-in name registered again starts every worker through the new start", function()
    local started = 0
    workers.register_transport("fork", function(on_message, on_exit)
      started = started + 1
      return core.fork_worker(on_message, on_exit)
    end)
    local ok, err = pcall(function()
      local pool <close> = lmp.Pool{processes = 2, start_method = "fork"}
      assert.equal(2, started)
      assert.equal(4, pool:apply(function(x) return x * 2 end, {2}))
    end)
    -- The built-in again, its batch with it, for the specs after this one.
    workers.register_transport("fork", function(on_message, on_exit)
      return core.fork_worker(on_message, on_exit)
    end, function(callbacks) return core.fork_workers(callbacks) end)
    assert.is_true(ok, err)
    assert.is_true(helpers.no_children())
  end)

  it("fails the pool with the error of a transport that cannot start a worker", function()
    workers.register_transport("broken", function() error("no carrier", 0) end)
    local ok, err = pcall(lmp.Pool, {processes = 1, start_method = "broken"})
    assert.is_false(ok)
    assert.matches("no carrier", tostring(err))
    assert.is_true(helpers.no_children())
  end)

  it("lets join return at once after a start failure broke a pool during a map", function()
    local starts = 0
    workers.register_transport("failing-later", function(on_message, on_exit)
      starts = starts + 1
      if starts >= 3 then error("no more workers", 0) end
      return workers.spawn(on_message, on_exit)
    end)
    -- Something else keeps the event loop alive meanwhile, as a server or
    -- a sleeping coroutine would: join must not wait for it.
    local done = false
    lmp.spawn(function() lmp.sleep(6); done = true end)
    local pool = lmp.Pool{processes = 2, start_method = "failing-later", maxtasksperchild = 1}
    local ok, err = pcall(pool.map, pool, function(x) return x end, {1, 2, 3, 4, 5, 6, 7, 8})
    assert.is_false(ok)
    assert.matches("no more workers", tostring(err))
    local started = core.hrtime()
    pool:close()
    pool:join()
    assert.is_false(done)
    assert.is_true(core.hrtime() - started < 3)
    assert.is_true(helpers.no_children())
  end)

  it("names the registered transports when asked for another", function()
    local ok, err = pcall(lmp.Pool, {processes = 1, start_method = "telepathy"})
    assert.is_false(ok)
    assert.matches("start method 'telepathy' is not supported; use 'spawn', 'fork'", err)
    assert.has_error(function() workers.register_transport("", function() end) end)
    assert.has_error(function() workers.register_transport("x", 42) end)
    assert.has_error(function() workers.register_transport("x", function() end, 42) end)
    assert.is_false(workers.has_transport("x"))
  end)

  it("starts a pool's workers in one call through a transport's start_many", function()
    local one_at_a_time, batches, asked = 0, 0, nil
    workers.register_transport("batched", function(on_message, on_exit)
      one_at_a_time = one_at_a_time + 1
      return workers.spawn(on_message, on_exit)
    end, function(callbacks, options)
      batches, asked = batches + 1, #callbacks // 2
      assert.equal("given", options.label)
      local handles = {}
      for i = 1, #callbacks, 2 do handles[#handles + 1] = workers.spawn(callbacks[i], callbacks[i + 1]) end
      return handles
    end)
    local pool <close> = lmp.Pool{processes = 3, start_method = "batched",
                                  start_options = {label = "given"}}
    assert.same({1, 3, 0}, {batches, asked, one_at_a_time})
    local doubled = pool:map(function(x) return x * 2 end, {1, 2, 3})
    assert.same({2, 4, 6}, {doubled[1], doubled[2], doubled[3]})
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)
end)

-- The double (tests/transport_double.lua) relays every frame through the
-- main process later than it came; the scheduler runs on it unchanged.
describe("a transport double plugged in through the registry", function()
  it("runs apply, map, imap and an executor, messages in order", function()
    local before = #double.handles
    local pool <close> = lmp.Pool{processes = 2, start_method = "double"}
    assert.equal(before + 2, #double.handles)
    assert.equal(5, pool:apply(function(a, b) return a + b end, {2, 3}))
    local squares = pool:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6, 7}, 2)
    assert.same({1, 4, 9, 16, 25, 36, 49, n = 7}, squares)
    local seen = {}
    for v in pool:imap(function(x) return x + 1 end, {10, 20, 30}) do seen[#seen + 1] = v end
    assert.same({11, 21, 31}, seen)
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1, start_method = "double"}
    assert.equal(6, ex:submit(function(x) return x * 2 end, 3):result())
    for i = before + 1, #double.handles do
      assert.is_true(double.handles[i].delivered > 0)
    end
  end)

  it("calls on_exit once, after the last message, when the pool closes", function()
    local before = #double.handles
    local pool = lmp.Pool{processes = 2, start_method = "double"}
    assert.same({2, 3, n = 2}, pool:map(function(x) return x + 1 end, {1, 2}))
    pool:close()
    pool:join()
    for i = before + 1, #double.handles do
      local h = double.handles[i]
      assert.equal(1, h.exits)
      assert.is_true(h.exited)
      assert.is_true(h.in_head > h.in_tail) -- nothing held back
      assert.is_false(helpers.alive(h:pid()))
    end
    assert.is_true(helpers.no_children())
  end)

  it("a worker killed from another process fails its task with worker_lost and is replaced",
    function()
    local pool <close> = lmp.Pool{processes = 1, start_method = "double"}
    helpers.check_killed_worker_is_replaced(pool, function(pid)
      assert.is_true(os.execute("kill -9 " .. pid))
    end)
  end)

  it("loses no result when workers die at random moments of a map", function()
    local pool <close> = lmp.Pool{processes = 2, start_method = "double"}
    math.randomseed(os.time())
    for _ = 1, 3 do
      local pids = pool:map(function() return core.getpid() end, {1, 2, 3, 4}, 1)
      local r = pool:map_async(function(x) busy(0.01); return x * 3 end,
        (function() local t = {} for i = 1, 60 do t[i] = i end return t end)(), 1)
      lmp.sleep(math.random() * 0.3)
      os.execute("kill -9 " .. pids[math.random(pids.n)] .. " 2>/dev/null")
      local ok, result = pcall(r.get, r, 60)
      if ok then
        for i = 1, 60 do assert.equal(i * 3, result[i]) end
      else
        assert.equal("worker_lost", result.kind)
      end
    end
    assert.equal(7, pool:apply(function(x) return x end, {7}))
  end)

  it("kill reaches the worker: a task over its timeout is killed and replaced", function()
    local pool <close> = lmp.Pool{processes = 1, start_method = "double", task_timeout = 0.2}
    local ok, err = pcall(pool.apply, pool, function() busy(30) end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal(5, pool:apply(function(x) return x end, {5}))
    local h = double.handles[#double.handles - 1]
    assert.equal(1, h.exits)
  end)

  it("a result that cannot be loaded in the main process fails that task, in order", function()
    lmp.register("transport_spec.bad_constructor", function() error("error at load", 0) end)
    local pool <close> = lmp.Pool{processes = 1, start_method = "double"}
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 2 then
        return require("crash").userdata({__lmp_serialize = function()
          return "transport_spec.bad_constructor", {} end})
      end
      return x
    end, {1, 2, 3}, 1)
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.matches("cannot be loaded in the main process: error at load", err.message)
    assert.same({4, 5, n = 2}, pool:map(function(x) return x end, {4, 5}))
  end)
end)
