-- lmp.Manager: dict and list proxies shared with workers and processes.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

describe("Manager", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("pool workers change a dict and a list through proxies", function()
    local m <close> = lmp.Manager()
    local d, l = m:dict({start = 1}), m:list({0})
    local pool <close> = lmp.Pool(2)
    pool:map(function(i)
      d:set("k" .. i, i * i)
      d:add("total", i)
      l:append(i)
    end, {1, 2, 3, 4, 5, 6}, 1)
    assert.equal(25, d:get("k5"))
    assert.equal(21, d:get("total"))
    assert.equal(8, d:len())
    assert.equal(7, #l)
    local items = l:copy()
    table.sort(items)
    assert.same({0, 1, 2, 3, 4, 5, 6}, {table.unpack(items, 1, 7)})
    assert.equal("missing", d:get("nope", "missing"))
    assert.is_true(d:contains("start"))
    assert.equal(1, d:pop("start"))
    assert.is_false(d:contains("start"))
  end)

  it("an lmp.Process reaches the manager too; list operations index from 1", function()
    local m <close> = lmp.Manager()
    local l = m:list({"a", "b"})
    local p = lmp.Process{target = function(list) list:set(1, "A"); list:append("c") end,
                          args = {l}}
    p:start(); p:join()
    assert.equal(0, p.exitcode)
    assert.equal("A", l:get(1))
    assert.equal("c", l:pop())
    assert.equal(2, l:len())
    local ok, err = pcall(l.get, l, 9)
    assert.is_false(ok)
    assert.matches("index out of range", err.message)
  end)

  it("after shutdown its proxies raise kind closed, and its socket is gone", function()
    local m = lmp.Manager()
    local d = m:dict()
    local path = m.path
    local pool <close> = lmp.Pool(1)
    m:shutdown()
    assert.is_nil(io.open(path))
    local ok, err = pcall(pool.apply, pool, function(proxy) return proxy:get("x") end, {d})
    assert.is_false(ok)
    assert.matches("manager", tostring(err))
    assert.has_error(function() m:dict() end)
  end)
end)
