-- lmp on luv's loop: a script that uses luv (Debian's lua-luv) gets one
-- loop for both, so luv timers and pool callbacks interleave and either
-- uv.run() or lmp's blocking calls drive everything.
local describe, it, assert, after_each = describe, it, assert, after_each
local _ENV = _G
local helpers = require "helpers"

local function run(code)
  local status, out, err = helpers.run_lua(code)
  assert.equal("", err)
  assert.equal(0, status)
  return out
end

describe("luv", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("lmp joins luv's loop: luv timers tick while a blocking map waits", function()
    local out = run([[
      local uv = require "luv"
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(2)
      local ticks = 0
      local timer = uv.new_timer()
      timer:start(10, 10, function() ticks = ticks + 1 end)
      pool:map(function(x) local t = os.clock() while os.clock() - t < 0.2 do end return x end, {1, 2})
      timer:close()
      print(ticks > 3, require("lmp.core").loop_is_luv())
    ]])
    assert.equal("true\ttrue\n", out)
  end)

  it("uv.run() delivers pool callbacks beside luv's own, and returns when idle", function()
    local out = run([[
      local lmp = require "lmp"   -- either order works
      local uv = require "luv"
      local pool = lmp.Pool(2)
      local events = {}
      pool:apply_async(function(x) return x * 2 end, {21},
        {callback = function(v) events[#events + 1] = "pool " .. v end})
      local timer = uv.new_timer()
      timer:start(300, 0, function() events[#events + 1] = "timer"; timer:close() end)
      uv.run()
      print(table.concat(events, ", "))
      pool:close()
      pool:join()
    ]])
    assert.equal("pool 42, timer\n", out)
  end)

  it("a blocking lmp call inside a luv callback raises a clear error", function()
    local out = run([[
      local uv = require "luv"
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      local timer = uv.new_timer()
      local message
      timer:start(1, 0, function()
        local ok, err = pcall(pool.apply, pool, function() return 1 end, {})
        message = tostring(err)
        timer:close()
      end)
      uv.run()
      print(message:match("blocking call was made while the event loop is running") ~= nil)
    ]])
    assert.equal("true\n", out)
  end)
end)
