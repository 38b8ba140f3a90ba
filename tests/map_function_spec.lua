-- A map's function travels once per call: encoded once, whatever the
-- number of workers it goes to (docs/protocol.md, the "function" frame),
-- and once per worker that lacks it. Each encoding is counted where it
-- happens, in the main process: a value in the function's upvalues whose
-- __lmp_serialize counts its calls.
-- busted runs a spec under an environment of its own; functions sent to
-- workers should see the real globals, as they do in a script.
local describe, it, setup, teardown, assert, pcall =
  describe, it, setup, teardown, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local function register_counted()
  require("lmp").register("map_function_spec.counted", function(data) return data end)
end

local encodings = 0
local counted = setmetatable({factor = 3}, {__lmp_serialize = function(t)
  encodings = encodings + 1
  return "map_function_spec.counted", {factor = rawget(t, "factor")}
end})

describe("a map's function", function()
  local pool
  setup(function() pool = lmp.Pool{processes = 3, initializer = register_counted} end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("is encoded once per call, not once per worker", function()
    local items = {1, 2, 3, 4, 5, 6, 7, 8, 9}
    for call = 1, 3 do
      encodings = 0
      -- A new closure each call, as spectral-norm makes them; chunks of
      -- one item give every worker a task of it.
      local r = pool:map(function(x) return x * counted.factor + call end, items, 1)
      assert.equal(1, encodings, "call " .. call)
      for i = 1, #items do assert.equal(i * 3 + call, r[i]) end
    end
  end)

  it("the workers keep: a function they have is not encoded again", function()
    local function f(x) return x * counted.factor end
    encodings = 0
    assert.same({3, 6, 9, n = 3}, pool:map(f, {1, 2, 3}, 1))
    assert.equal(1, encodings)
    -- Every worker may not have had a task of the first call: at most one
    -- more encoding, for those that lack it.
    assert.same({3, 6, 9, 12, 15, 18, n = 6}, pool:map(f, {1, 2, 3, 4, 5, 6}, 1))
    local after_second = encodings
    assert.is_true(after_second <= 2, "encodings: " .. after_second)
    assert.same({3, 6, 9, 12, 15, 18, n = 6}, pool:map(f, {1, 2, 3, 4, 5, 6}, 1))
    assert.equal(after_second, encodings)
  end)

  it("reaches workers that replace others with one encoding per call", function()
    local p = lmp.Pool{processes = 2, maxtasksperchild = 1, initializer = register_counted}
    local function f(x) return x * counted.factor end
    encodings = 0
    assert.same({3, 6, 9, 12, n = 4}, p:map(f, {1, 2, 3, 4}, 1))
    assert.equal(1, encodings)
    -- Known to the pool, in no worker now: encoded once, at the first need.
    encodings = 0
    assert.same({3, 6, 9, 12, n = 4}, p:map(f, {1, 2, 3, 4}, 1))
    assert.equal(1, encodings)
    p:close()
    p:join()
  end)

  it("that cannot be sent fails the call naming where, and nothing runs", function()
    local marker = os.tmpname()
    local file = io.tmpfile()
    local function mark(x)
      local f = io.open(marker, "a")
      f:write(x, " ")
      f:close()
      return file and x
    end
    local ok, err = pcall(pool.map, pool, mark, {1, 2, 3, 4, 5, 6}, 1)
    file:close()
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.matches("cannot send userdata %(FILE%*%) at function%(upvalue 'file'%)", err.message)
    lmp.sleep(0.1)
    local f = io.open(marker)
    local ran = f:read("a")
    f:close()
    os.remove(marker)
    assert.equal("", ran)
    -- The pool goes on.
    assert.same({3, 6, n = 2}, pool:map(function(x) return x * counted.factor end, {1, 2}))
  end)

  it("whose worker lacks a name it holds fails every item of that worker, and the pool goes on",
     function()
    -- A pool without the constructor: each worker receives the function
    -- with a name it does not know.
    local p = lmp.Pool(2)
    local ok, err = pcall(p.map, p, function(x) return x * counted.factor end, {1, 2, 3, 4}, 1)
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.matches("map_function_spec.counted", err.message)
    assert.same({1, 4, n = 2}, p:map(function(x) return x * x end, {1, 2}))
    p:close()
    p:join()
  end)
end)
