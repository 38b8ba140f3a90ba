local lmp = require "lmp"
local helpers = require "helpers"

describe("Pool", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("map returns results in input order with n", function()
    local r = pool:map(function(x) return x * x end, {1, 2, 3, 4, 5})
    assert.same({1, 4, 9, 16, 25, n = 5}, r)
  end)
end)
