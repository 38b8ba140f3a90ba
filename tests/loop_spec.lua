-- The event loop (docs/reference.md, "The event loop"): callbacks on the main
-- thread one at a time, blocking calls, lmp.run, lmp.spawn, lmp.sleep.
local describe, it, setup, teardown, after_each, assert, pcall =
  describe, it, setup, teardown, after_each, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local function slow_echo(x, seconds)
  local t = os.clock()
  while os.clock() - t < seconds do end
  return x
end

describe("event loop", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    lmp.on_error(nil)
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("lmp.run turns the loop until every callback has fired", function()
    local got = {}
    for i = 1, 5 do
      pool:apply_async(function(x) return x * 10 end, {i},
        {callback = function(v) got[#got + 1] = v end})
    end
    lmp.run()
    table.sort(got)
    assert.same({10, 20, 30, 40, 50}, got)
  end)

  it("callbacks run on the main process, one at a time", function()
    local running, overlap, pids = 0, false, {}
    for i = 1, 4 do
      pool:apply_async(function(x) return x end, {i}, {callback = function()
        running = running + 1
        if running > 1 then overlap = true end
        pids[#pids + 1] = require("lmp").current_process().pid
        running = running - 1
      end})
    end
    lmp.run()
    assert.is_false(overlap)
    for _, pid in ipairs(pids) do assert.equal(lmp.current_process().pid, pid) end
  end)

  it("a callback that raises is reported and the pool goes on delivering", function()
    local reports, got = {}, {}
    lmp.on_error(function(err, traceback) reports[#reports + 1] = {err, traceback} end)
    for i = 1, 3 do
      pool:apply_async(function(x) return x end, {i}, {callback = function(v)
        if v == 2 then error("callback failed") end
        got[#got + 1] = v
      end})
    end
    lmp.run()
    lmp.on_error(nil)
    assert.equal(1, #reports)
    assert.matches("callback failed", reports[1][1])
    assert.matches("traceback", reports[1][2])
    table.sort(got)
    assert.same({1, 3}, got)
    assert.same({1, n = 1}, pool:map(function(x) return x end, {1}))
  end)

  it("a callback that raises goes to stderr by default", function()
    local status, _, err = helpers.run_lua([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      pool:apply_async(function() return 1 end, {}, {callback = function() error("loud") end})
      lmp.run()
      print(pool:apply(function() return "still working" end))
    ]])
    assert.equal(0, status)
    assert.matches("lmp: error in callback: .*loud", err)
    assert.matches("stack traceback", err)
  end)

  it("a blocking call inside a callback works", function()
    local inner
    pool:apply_async(function() return 2 end, {}, {callback = function(v)
      inner = pool:apply(function(x) return x * 21 end, {v})
    end})
    lmp.run()
    assert.equal(42, inner)
  end)

  it("spawned coroutines wait on results at once, yielding to the loop", function()
    local order = {}
    lmp.spawn(function()
      local r = pool:apply_async(slow_echo, {"slow", 0.3})
      local v = r:get()
      order[#order + 1] = v
    end)
    lmp.spawn(function()
      local v = pool:apply(slow_echo, {"fast", 0.01})
      order[#order + 1] = v
    end)
    assert.same({}, order) -- both are waiting, neither blocked the other
    lmp.run()
    assert.same({"fast", "slow"}, order)
  end)

  it("lmp.sleep yields in a coroutine and turns the loop elsewhere", function()
    local steps = {}
    lmp.spawn(function()
      lmp.sleep(0.1)
      steps[#steps + 1] = "slept"
    end)
    steps[#steps + 1] = "main"
    local t0 = require("lmp.core").hrtime()
    lmp.run()
    assert.same({"main", "slept"}, steps)
    assert.is_true(require("lmp.core").hrtime() - t0 >= 0.09)
    local t1 = require("lmp.core").hrtime()
    lmp.sleep(0.05)
    assert.is_true(require("lmp.core").hrtime() - t1 >= 0.045)
  end)

  it("an error in a spawned coroutine is reported", function()
    local reports = {}
    lmp.on_error(function(err) reports[#reports + 1] = err end)
    lmp.spawn(function() error("inside") end)
    lmp.on_error(nil)
    assert.equal(1, #reports)
    assert.matches("inside", reports[1])
  end)

  it("misuse raises bad argument errors", function()
    assert.error_matches(function() lmp.spawn(42) end, "bad argument #1 to 'spawn'")
    assert.error_matches(function() lmp.sleep(-1) end, "bad argument #1 to 'sleep'")
    assert.error_matches(function() lmp.on_error(5) end, "bad argument #1 to 'on_error'")
  end)
end)
