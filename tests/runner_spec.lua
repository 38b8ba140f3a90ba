-- The runner: `lmp script.lua [args]` behaves like `lua5.4 script.lua
-- [args]`, then delivers every pending callback and closes the pools.
local describe, it, after_each, assert = describe, it, after_each, assert
local _ENV = _G
local helpers = require "helpers"

local function run(code, args)
  return helpers.run_lua(code, helpers.runner, args)
end

describe("the lmp runner", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("gives the script arg and ... as lua5.4 does", function()
    local code = [[
      print(#arg, arg[1], arg[2], select("#", ...), ...)
      print(arg[0]:match("%.lua$") ~= nil, arg[-1] ~= nil)
    ]]
    local status, out = run(code, "one two")
    local _, expected = helpers.run_lua(code, "lua5.4", "one two")
    assert.equal(0, status)
    assert.equal(expected, out)
  end)

  it("fires every pending callback after the main chunk returns", function()
    local status, out = run([[
      local lmp = require "lmp"
      local pool = lmp.Pool(2)
      for i = 1, 3 do
        pool:apply_async(function(x) return x * x end, {i}, {callback = function(v)
          print("callback", v)
        end})
      end
      print("main chunk done")
    ]])
    assert.equal(0, status)
    assert.matches("^main chunk done\n", out)
    for _, v in ipairs{1, 4, 9} do assert.matches("callback\t" .. v .. "\n", out, 1, true) end
  end)

  it("waits for spawned coroutines and sleeps", function()
    local status, out = run([[
      local lmp = require "lmp"
      lmp.spawn(function() lmp.sleep(0.05); print("woke") end)
      print("first")
    ]])
    assert.equal(0, status)
    assert.equal("first\nwoke\n", out)
  end)

  it("an error exits 1 with the message and a traceback on stderr", function()
    local status, out, err = run([[
      print("before")
      local function inner() error("it broke") end
      inner()
    ]])
    assert.equal(1, status)
    assert.equal("before\n", out)
    assert.matches("^lmp: .*: it broke\nstack traceback:", err)
    local lua_status = helpers.run_lua('error("x")', "lua5.4")
    assert.equal(lua_status, status)
  end)

  it("an error object raised by the script is shown with its tostring", function()
    local status, _, err = run([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      pool:apply(function() error("in the worker") end, {})
    ]])
    assert.equal(1, status)
    assert.matches("lmp task error %(item 1, process %d+%): .*in the worker", err)
  end)

  it("a submission refused for an unsendable argument leaves nothing pending", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local pool = lmp.Pool(1)
      print(pcall(pool.apply_async, pool, print, {io.tmpfile()}))
      print(pcall(pool.map_async, pool, print, {1, coroutine.create(print)}))
      print("end of script")
    ]], "timeout 10 " .. helpers.runner)
    assert.equal(0, status)
    assert.matches("end of script\n$", out)
  end)

  it("os.exit keeps its status", function()
    local status = run("os.exit(3)")
    assert.equal(3, status)
  end)

  it("without a script prints usage and exits 2", function()
    local status, _, err = helpers.run(helpers.runner)
    assert.equal(2, status)
    assert.matches("usage: lmp script.lua", err)
  end)

  it("runs the README example end to end", function()
    local status, out = helpers.run(helpers.runner .. " " .. helpers.root .. "/examples/count_primes.lua")
    assert.equal(0, status)
    assert.matches("Total primes found: %d+\n$", out)
  end)
end)
