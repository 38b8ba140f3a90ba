-- ProcessPoolExecutor, futures, as_completed and wait (docs/reference.md, "ProcessPoolExecutor").
local describe, it, setup, teardown, after_each, assert, pcall =
  describe, it, setup, teardown, after_each, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

local function sleepy(x, seconds)
  local t = os.clock()
  while os.clock() - t < (seconds or 0) do end
  return x
end

describe("ProcessPoolExecutor", function()
  local ex
  setup(function() ex = lmp.ProcessPoolExecutor{max_workers = 2} end)
  teardown(function()
    ex:shutdown()
    assert.is_true(helpers.no_children())
  end)

  it("max_workers defaults to the CPU count", function()
    local e <close> = lmp.ProcessPoolExecutor()
    assert.equal(lmp.cpu_count(), e.pool.processes)
  end)

  it("submit returns a future whose result is every returned value", function()
    local f = ex:submit(function(a, b) return a + b, a * b end, 3, 4)
    assert.same({7, 12}, {f:result()})
    assert.is_true(f:done())
    assert.is_false(f:running())
    assert.is_false(f:cancelled())
    assert.is_nil(f:exception())
  end)

  it("a failing call: result raises, exception returns the error object", function()
    local f = ex:submit(function() error("kaput") end)
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.equal("task", err.kind)
    assert.equal(err, f:exception())
    assert.matches("kaput", tostring(f:exception()))
  end)

  it("result(timeout) raises kind timeout and leaves the future running", function()
    local f = ex:submit(sleepy, "late", 0.4)
    local ok, err = pcall(f.result, f, 0.05)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.is_true(f:running())
    assert.equal("late", f:result())
  end)

  it("cancel: a queued future is cancelled, a running one is not", function()
    local running = {ex:submit(sleepy, 1, 0.3), ex:submit(sleepy, 2, 0.3)}
    -- Two workers, two in flight each: the fifth waits in the queue.
    local fillers = {ex:submit(sleepy, 3, 0.3), ex:submit(sleepy, 4, 0.3)}
    local queued = ex:submit(sleepy, 5, 0)
    assert.is_true(queued:cancel())
    assert.is_true(queued:cancelled())
    assert.is_true(queued:done())
    assert.is_true(queued:cancel())
    local ok, err = pcall(queued.result, queued)
    assert.is_false(ok)
    assert.equal("cancelled", err.kind)
    lmp.sleep(0.05)
    assert.is_true(running[1]:running())
    assert.is_false(running[1]:cancel())
    assert.equal(1, running[1]:result())
    for i, f in ipairs(fillers) do assert.equal(i + 2, f:result()) end
  end)

  it("add_done_callback runs on the loop, and at once when already done", function()
    local seen = {}
    local f = ex:submit(sleepy, "v", 0.05)
    f:add_done_callback(function(fut) seen[#seen + 1] = fut:result() end)
    assert.same({}, seen)
    f:result()
    lmp.run()
    assert.same({"v"}, seen)
    f:add_done_callback(function() seen[#seen + 1] = "again" end)
    assert.same({"v", "again"}, seen)
  end)

  it("map yields results in order over zipped inputs, lazily", function()
    local out = {}
    for v in ex:map(function(a, b) return a * b end, {1, 2, 3, 4}, {10, 20, 30}) do
      out[#out + 1] = v
    end
    assert.same({10, 40, 90}, out)
    local n = 0
    local function endless() n = n + 1; return n end
    local count = 0
    for _ in ex:map(function(x) return x end, endless, {chunksize = 4}) do
      count = count + 1
      if count == 500 then break end
    end
    assert.is_true(n < 10000)
  end)

  it("map with a timeout raises kind timeout for a result not there in time", function()
    local it = ex:map(sleepy, {1, 2}, {0, 2}, {timeout = 0.3})
    assert.equal(1, it())
    local ok, err = pcall(it)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
  end)

  it("a worker that dies fails only its own future; the executor goes on", function()
    local doomed = ex:submit(function() os.exit(9) end)
    local fine = ex:submit(function() return "fine" end)
    assert.equal("worker_lost", doomed:exception().kind)
    assert.equal("fine", fine:result())
    assert.equal(5, ex:submit(function() return 5 end):result())
  end)

  it("inside lmp.spawn, result() yields to the loop", function()
    local order = {}
    lmp.spawn(function()
      local v = ex:submit(sleepy, "slow", 0.3):result()
      order[#order + 1] = v
    end)
    lmp.spawn(function()
      local v = ex:submit(sleepy, "quick", 0):result()
      order[#order + 1] = v
    end)
    lmp.run()
    assert.same({"quick", "slow"}, order)
  end)

  it("bad arguments raise bad argument errors", function()
    assert.error_matches(function() ex:submit(5) end, "bad argument #1 to 'submit'")
    assert.error_matches(function() ex:map(print, 5) end, "bad argument #2 to 'map'")
    assert.error_matches(function() lmp.ProcessPoolExecutor{max_workers = 0} end,
      "bad argument #1 to 'ProcessPoolExecutor'")
    assert.error_matches(function() lmp.as_completed(5) end, "bad argument #1 to 'as_completed'")
    assert.error_matches(function() lmp.wait({}, {return_when = "SOON"}) end,
      "bad argument #2 to 'wait'")
  end)
end)

describe("as_completed and wait", function()
  local ex
  setup(function() ex = lmp.ProcessPoolExecutor{max_workers = 2} end)
  teardown(function()
    ex:shutdown()
    assert.is_true(helpers.no_children())
  end)

  it("as_completed yields futures in completion order", function()
    local futures = {ex:submit(sleepy, "slow", 0.4), ex:submit(sleepy, "fast", 0.05)}
    local order = {}
    for f in lmp.as_completed(futures) do order[#order + 1] = f:result() end
    assert.same({"fast", "slow"}, order)
  end)

  it("as_completed with a timeout raises kind timeout", function()
    local futures = {ex:submit(sleepy, 1, 0), ex:submit(sleepy, 2, 0.5)}
    local got = {}
    local ok, err = pcall(function()
      for f in lmp.as_completed(futures, 0.2) do got[#got + 1] = f:result() end
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.same({1}, got)
    futures[2]:result()
  end)

  it("as_completed inside lmp.spawn yields to the loop", function()
    local log = {}
    lmp.spawn(function()
      local futures = {ex:submit(sleepy, "b", 0.3), ex:submit(sleepy, "a", 0.1)}
      for f in lmp.as_completed(futures) do log[#log + 1] = f:result() end
    end)
    log[#log + 1] = "main goes on"
    lmp.run()
    assert.same({"main goes on", "a", "b"}, log)
  end)

  it("wait returns done and not-done for each return_when", function()
    local slow, fast = ex:submit(sleepy, 1, 0.4), ex:submit(sleepy, 2, 0)
    local done, not_done = lmp.wait({slow, fast}, {return_when = "FIRST_COMPLETED"})
    assert.same({fast}, done)
    assert.same({slow}, not_done)
    done, not_done = lmp.wait({slow, fast})
    assert.equal(2, #done)
    assert.equal(0, #not_done)

    local bad = ex:submit(function() error("x") end)
    local long = ex:submit(sleepy, 3, 0.5)
    done, not_done = lmp.wait({long, bad}, {return_when = "FIRST_EXCEPTION"})
    assert.same({bad}, done)
    assert.same({long}, not_done)

    done, not_done = lmp.wait({long}, {timeout = 0.01})
    assert.equal(0, #done)
    long:result()
  end)
end)

describe("done callbacks", function()
  after_each(function()
    lmp.on_error(nil)
    assert.is_true(helpers.no_children())
  end)

  it("an error in a callback added to a finished future is reported, not raised", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local f = ex:submit(function() return 1 end)
    f:result()
    local reported, seen = {}, {}
    lmp.on_error(function(err) reported[#reported + 1] = tostring(err) end)
    f:add_done_callback(function() error("callback failed", 0) end)
    f:add_done_callback(function(fut) seen[#seen + 1] = fut:result() end)
    assert.same({"callback failed"}, reported)
    assert.same({1}, seen)
  end)

  it("cancel() runs the callbacks before it returns, as Python's does", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local busy = ex:submit(sleepy, 1, 0.3)
    local fillers = {ex:submit(sleepy, 2, 0), ex:submit(sleepy, 3, 0)}
    local queued = ex:submit(sleepy, 4, 0)
    local reported, seen = {}, {}
    lmp.on_error(function(err) reported[#reported + 1] = tostring(err) end)
    queued:add_done_callback(function(fut) seen[#seen + 1] = fut:cancelled() end)
    queued:add_done_callback(function() error("in cancel", 0) end)
    assert.is_true(queued:cancel())
    assert.same({true}, seen)
    assert.same({"in cancel"}, reported)
    -- They ran once: nothing more when the loop turns.
    assert.equal(1, busy:result())
    for _, f in ipairs(fillers) do f:result() end
    lmp.run()
    assert.same({true}, seen)
  end)

  local script = [[
    local lmp = require "lmp"
    local ex = lmp.ProcessPoolExecutor(1)
    local f = ex:submit(function(x)
      local t = os.clock() while os.clock() - t < 0.1 do end
      return x
    end, "late")
    f:add_done_callback(function(fut) print("callback", fut:result()) end)
    if ... then ex:shutdown{wait = false} end
    print("end of script")
  ]]

  it("run at the end of a plain lua5.4 script that never waited for them", function()
    for _, shutdown in ipairs({"false", "true"}) do
      local status, out, err = helpers.run_lua((script:gsub("%.%.%.", shutdown, 1)))
      assert.equal("", err)
      assert.equal(0, status)
      assert.equal("end of script\ncallback\tlate\n", out)
    end
    local status, out, err = helpers.run_lua((script:gsub("%.%.%.", "false", 1)), helpers.runner)
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("end of script\ncallback\tlate\n", out)
  end)
end)

describe("shutdown", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("<close> shuts down and waits; submit afterwards raises kind closed", function()
    local ex
    local f
    do
      local e <close> = lmp.ProcessPoolExecutor{max_workers = 1}
      ex = e
      f = e:submit(sleepy, "done", 0.1)
    end
    assert.is_true(f:done())
    local ok, err = pcall(ex.submit, ex, print)
    assert.is_false(ok)
    assert.equal("closed", err.kind)
  end)

  it("shutdown{cancel_futures = true} cancels what is queued", function()
    local ex = lmp.ProcessPoolExecutor{max_workers = 1}
    local futures = {}
    for i = 1, 5 do futures[i] = ex:submit(sleepy, i, 0.1) end
    ex:shutdown{cancel_futures = true}
    assert.equal(1, futures[1]:result())
    assert.is_true(futures[5]:cancelled())
  end)

  it("an initializer and initargs reach every worker", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2,
      initializer = function(v) greeting = v end, initargs = {"hi"}}
    assert.equal("hi", ex:submit(function() return greeting end):result())
  end)
end)
