-- lmp.Process (docs/reference.md, "Processes").
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

describe("Process", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("runs its target with args in another process and exits 0", function()
    local path = os.tmpname()
    local p = lmp.Process{target = function(file, a, b)
      local me = require("lmp").current_process()
      local f = io.open(file, "w")
      f:write(a + b, " ", me.name, " ", me.pid)
      f:close()
    end, args = {path, 20, 22}, name = "adder"}
    assert.is_false(p:is_alive())
    p:start()
    assert.is_number(p.pid)
    p:join()
    assert.equal(0, p.exitcode)
    assert.is_false(p:is_alive())
    assert.equal("42 adder " .. p.pid, helpers.read_file(path))
    os.remove(path)
  end)

  it("close releases the handle and the sentinel's descriptor at once, as Python's", function()
    local fds = helpers.open_fds()
    local p = lmp.Process{target = function() end}
    p:start()
    p:join(30)
    local sentinel = p.sentinel
    p:close()
    -- The objects are still referenced: only close can have let go.
    assert.equal(fds, helpers.open_fds())
    assert.has_error(function() sentinel:fileno() end)
  end)

  it("a target that raises exits 1 with its traceback on stderr", function()
    local status, _, err = helpers.run_lua([[
      local lmp = require "lmp"
      local p = lmp.Process{target = function() error("target failed") end}
      p:start(); p:join()
      print(p.exitcode)
    ]], helpers.runner)
    assert.equal(0, status)
    assert.matches("Process Process%-1 %(pid %d+%) failed:\n.*target failed\nstack traceback", err)
  end)

  it("exitcode is os.exit's status, or -N for signal N", function()
    local p = lmp.Process{target = function() os.exit(4) end}
    p:start(); p:join()
    assert.equal(4, p.exitcode)
    local spinner = lmp.Process{target = function() while true do end end}
    spinner:start()
    assert.is_true(spinner:is_alive())
    spinner:terminate(); spinner:join()
    assert.equal(-15, spinner.exitcode)
    local other = lmp.Process{target = function() while true do end end}
    other:start(); other:kill(); other:join()
    assert.equal(-9, other.exitcode)
  end)

  it("join(timeout) returns with the process still running", function()
    local p = lmp.Process{target = function() while true do end end}
    p:start()
    p:join(0.1)
    assert.is_nil(p.exitcode)
    assert.is_true(p:is_alive())
    p:kill(); p:join()
  end)

  it("an unsendable target or argument raises from start, before any process", function()
    local p = lmp.Process{target = print, args = {io.tmpfile()}}
    local ok, err = pcall(p.start, p)
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.is_nil(p.pid)
  end)

  it("the runner waits for non-daemon processes and kills daemon ones", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      lmp.Process{target = function()
        local t = os.clock() while os.clock() - t < 0.2 do end
        print("child finished")
      end}:start()
      lmp.Process{target = function() while true do end end, daemon = true}:start()
      print("main done")
    ]], "timeout 10 " .. helpers.runner)
    assert.equal(0, status)
    assert.equal("main done\nchild finished\n", out)
  end)

  it("misuse raises", function()
    assert.error_matches(function() lmp.Process(5) end, "bad argument #1 to 'Process'")
    assert.error_matches(function() lmp.Process{target = 5} end, "target must be a function")
    local p = lmp.Process{target = print}
    assert.has_error(function() p:join() end)
    p:start(); p:join()
    assert.has_error(function() p:start() end)
  end)

  it("get_context gives the API for a start method", function()
    local ctx = lmp.get_context("spawn")
    assert.equal("spawn", ctx.get_start_method())
    local pool <close> = ctx.Pool(1)
    assert.equal(4, pool:apply(function() return 4 end))
    assert.equal("fork", lmp.get_context("fork").get_start_method())
    assert.error_matches(function() lmp.get_context("vfork") end,
      "bad argument #1 to 'get_context'")
  end)
end)
