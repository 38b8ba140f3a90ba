-- lmp on luv's loop: a script that uses luv (Debian's lua-luv) gets one
-- loop for both, so luv timers and pool callbacks interleave and either
-- uv.run() or lmp's blocking calls drive everything.
local describe, it, assert, after_each = describe, it, assert, after_each
local _ENV = _G
local helpers = require "helpers"

local run = helpers.run_lua_ok

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

  it("a pool made before luv: luv timers tick while a blocking map waits", function()
    local out = run([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(2)
      local uv = require "luv"
      local ticks = 0
      local timer = uv.new_timer()
      timer:start(10, 10, function() ticks = ticks + 1 end)
      pool:map(function(x) local t = os.clock() while os.clock() - t < 0.2 do end return x end, {1, 2})
      timer:close()
      uv.run()
      print(ticks > 3)
    ]])
    assert.equal("true\n", out)
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
      local message, kind
      timer:start(1, 0, function()
        local ok, err = pcall(pool.apply, pool, function() return 1 end, {})
        message = tostring(err)
        kind = err.kind
        timer:close()
      end)
      uv.run()
      print(message:match("blocking call was made while the event loop is running") ~= nil,
            kind, message:match("apply_async") ~= nil and message:match("lmp.spawn") ~= nil)
    ]])
    assert.equal("true\tin_callback\ttrue\n", out)
  end)
  -- A luv TCP server whose answers are computed by the pool, with lmp
  -- loaded and its pool made before or after luv.
  local server = [[
    local order = ...
    local lmp, uv, pool
    if order == "pool first" then
      lmp = require "lmp"
      pool = lmp.Pool(2)
      uv = require "luv"
    else
      uv = require "luv"
      lmp = require "lmp"
      pool = lmp.Pool(2)
    end
    local reply = {}
    local server = uv.new_tcp()
    assert(server:bind("127.0.0.1", 0))
    local port = server:getsockname().port
    local guard = uv.new_timer()
    assert(server:listen(8, function()
      local peer = uv.new_tcp()
      server:accept(peer)
      peer:read_start(function(_, data)
        if not data then return end
        pool:apply_async(function(s) return s:upper() end, {data}, {callback = function(r)
          peer:write(r, function() peer:close() end)
        end})
      end)
    end))
    local client = uv.new_tcp()
    client:connect("127.0.0.1", port, function(err)
      assert(not err, err)
      client:write("hello")
      client:read_start(function(_, data)
        if data then reply[#reply + 1] = data return end
        client:close()
        server:close()
        guard:close()
      end)
    end)
    -- Never hang the suite: give up after 20 s.
    guard:start(20000, 0, function()
      reply = {"gave up"}
      guard:close()
      if not client:is_closing() then client:close() end
      if not server:is_closing() then server:close() end
    end)
    uv.run()
    print(table.concat(reply))
    pool:close()
    pool:join()
  ]]

  for _, order in ipairs({"pool first", "luv first"}) do
    it(("a luv TCP server answers through the pool inside uv.run() (%s)"):format(order), function()
      local code = (server:gsub("%.%.%.", ("%q"):format(order), 1))
      assert.equal("HELLO\n", run(code))
      assert.equal("HELLO\n", run(code, helpers.runner))
    end)
  end

  it("the runner serves luv handles and pool callbacks a script left pending, in either order", function()
    local script = [[
      local order = ...
      local lmp, uv, pool
      if order == "pool first" then
        lmp = require "lmp"
        pool = lmp.Pool(1)
        uv = require "luv"
      else
        uv = require "luv"
        lmp = require "lmp"
        pool = lmp.Pool(1)
      end
      local timer = uv.new_timer()
      timer:start(200, 0, function()
        print("timer")
        timer:close()
        pool:apply_async(function() return "late" end, {}, {callback = print})
      end)
      pool:apply_async(function(x) return x * 2 end, {21}, {callback = print})
      print("end of script")
    ]]
    for _, order in ipairs({"pool first", "luv first"}) do
      local code = (script:gsub("%.%.%.", ("%q"):format(order), 1))
      assert.equal("end of script\n42\ntimer\nlate\n", run(code, helpers.runner))
    end
  end)
end)
