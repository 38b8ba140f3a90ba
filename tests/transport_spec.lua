-- The transport registry (docs/architecture.md, "How to add a transport"):
-- a pool starts its workers through the transport its start_method names.
local describe, it, assert, pcall = describe, it, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local workers = require "lmp.workers"
local helpers = require "helpers"

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

  it("fails the pool with the error of a transport that cannot start a worker", function()
    workers.register_transport("broken", function() error("no carrier", 0) end)
    local ok, err = pcall(lmp.Pool, {processes = 1, start_method = "broken"})
    assert.is_false(ok)
    assert.matches("no carrier", tostring(err))
    assert.is_true(helpers.no_children())
  end)

  it("names the registered transports when asked for another", function()
    local ok, err = pcall(lmp.Pool, {processes = 1, start_method = "telepathy"})
    assert.is_false(ok)
    assert.matches("start method 'telepathy' is not supported; use 'spawn', 'fork'", err)
    assert.has_error(function() workers.register_transport("", function() end) end)
    assert.has_error(function() workers.register_transport("x", 42) end)
  end)
end)
