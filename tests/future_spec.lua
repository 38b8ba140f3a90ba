-- lmp.Future(): futures the user makes and settles, as concurrent.futures'
-- Future() (CPython's FutureTests where they apply), with the executor
-- futures' methods and lmp.futures.wait/as_completed.
local describe, it, assert, pcall = describe, it, assert, pcall
local _ENV = _G
local lmp = require "lmp"

local function settle() lmp.run() end

describe("lmp.Future()", function()
  it("starts pending; set_running_or_notify_cancel makes it running, set_result finished", function()
    local f = lmp.Future()
    assert.is_false(f:done())
    assert.is_false(f:running())
    assert.is_false(f:cancelled())
    assert.equal("lmp.Future(pending)", tostring(f))
    assert.is_true(f:set_running_or_notify_cancel())
    assert.is_true(f:running())
    assert.is_false(f:cancel()) -- a running future cannot be cancelled
    f:set_result(42, nil, "x")
    assert.is_true(f:done())
    assert.is_false(f:running())
    assert.equal("lmp.Future(finished)", tostring(f))
    assert.same({42, nil, "x", n = 3}, table.pack(f:result()))
    assert.is_nil(f:exception())
  end)

  it("test_multiple_set_result: a second set_result or set_exception raises", function()
    local f = lmp.Future()
    f:set_result(1)
    local ok, err = pcall(f.set_result, f, 2)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    ok, err = pcall(f.set_exception, f, "boom")
    assert.is_false(ok)
    assert.equal("value", err.kind)
    assert.equal(1, f:result())
  end)

  it("test_multiple_set_exception: the first error stays", function()
    local f = lmp.Future()
    local first = {message = "first"}
    f:set_exception(first)
    assert.is_false(pcall(f.set_exception, f, {message = "second"}))
    assert.equal(first, f:exception())
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.equal(first, err)
  end)

  it("a cancelled future runs its callbacks; set_running_or_notify_cancel then says false", function()
    local f = lmp.Future()
    local seen
    f:add_done_callback(function(fut) seen = fut:cancelled() end)
    assert.is_true(f:cancel())
    assert.is_true(seen)
    assert.is_false(f:set_running_or_notify_cancel())
    assert.is_false(pcall(f.set_result, f, 1))
  end)

  it("set_running_or_notify_cancel twice raises", function()
    local f = lmp.Future()
    assert.is_true(f:set_running_or_notify_cancel())
    local ok, err = pcall(f.set_running_or_notify_cancel, f)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    f:set_result(nil)
    assert.is_false(pcall(f.set_running_or_notify_cancel, f))
  end)

  it("done callbacks run once it is settled, in order, on the main thread", function()
    local f = lmp.Future()
    local calls = {}
    f:add_done_callback(function(fut) calls[#calls + 1] = "a" .. fut:result() end)
    f:add_done_callback(function(fut) calls[#calls + 1] = "b" .. fut:result() end)
    f:set_result(7)
    settle()
    assert.same({"a7", "b7"}, calls)
    f:add_done_callback(function() calls[#calls + 1] = "late" end)
    assert.same({"a7", "b7", "late"}, calls)
  end)

  it("result(timeout) raises kind timeout while nobody settles it", function()
    local f = lmp.Future()
    local ok, err = pcall(f.result, f, 0.05)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
  end)

  it("lmp.futures.wait and as_completed take user futures beside executor ones", function()
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1}
    local mine, later = lmp.Future(), lmp.Future()
    local theirs = ex:submit(function() return "worker" end)
    lmp.spawn(function()
      lmp.sleep(0.05)
      mine:set_result("mine")
    end)
    local done, not_done = lmp.futures.wait({mine, later, theirs},
                                            {return_when = lmp.futures.FIRST_COMPLETED})
    assert.is_true(#done >= 1)
    assert.is_true(#not_done >= 1)
    assert.equal("worker", theirs:result(30))
    assert.equal("mine", mine:result(30))
    later:set_exception("no")
    local order = {}
    for f in lmp.futures.as_completed({mine, later, theirs}, 30) do order[#order + 1] = f end
    assert.equal(3, #order)
    assert.equal(lmp.Future, lmp.futures.Future)
  end)
end)
