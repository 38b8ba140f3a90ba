-- What a worker makes of what it is sent: the script's globals beside
-- the initializer's, names it does not know, errors it cannot describe
-- plainly, running out of memory. Each case runs as a script of its own,
-- so that its globals are a script's globals.
local describe, it, assert, after_each = describe, it, assert, after_each
local _ENV = _G
local helpers = require "helpers"

local function run(code, interpreter)
  local status, out, err = helpers.run_lua(code, interpreter)
  assert.equal("", err)
  assert.equal(0, status)
  return out
end

describe("worker", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  describe("initializer globals", function()
    local script = [[
      local lmp = require "lmp"
      STATUS = "uninitialized"
      LIMIT = 1
      local pool <close> = lmp.Pool{processes = 1, start_method = ...,
        initializer = function() STATUS = "ready"; CACHE = {} end}
      local function read() return STATUS, LIMIT, CACHE ~= nil end
      print(pool:apply(read, {}))
      -- The script changes both later: the initializer's name stays the
      -- worker's, the other follows the script.
      STATUS, LIMIT = "changed", 2
      print(pool:apply(function() return STATUS, LIMIT, CACHE ~= nil end, {}))
    ]]
    local expected = "ready\t1\ttrue\nready\t2\ttrue\n"

    it("what the initializer set wins over the script's globals, now and later", function()
      assert.equal(expected, run((script:gsub("%.%.%.", "'spawn'", 1))))
    end)

    it("the same under the runner and with the fork start method", function()
      assert.equal(expected, run((script:gsub("%.%.%.", "'spawn'", 1)), helpers.runner))
      assert.equal(expected, run((script:gsub("%.%.%.", "'fork'", 1))))
    end)
  end)
end)
