-- Every function the module exports, and every function of the C API, is
-- documented in docs/reference.md.
local describe, it, assert = describe, it, assert
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local reference = helpers.read_file(helpers.root .. "/docs/reference.md")

local function documented(pattern)
  return reference:find(pattern, 1, true) ~= nil
end

local function public_methods(class)
  local names = {}
  for name, value in pairs(class) do
    if type(value) == "function" and not name:match("^_") then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

describe("docs/reference.md", function()
  it("documents every function of require 'lmp'", function()
    for name, value in pairs(lmp) do
      if not name:match("^_") and (type(value) == "function" or name == "version") then
        assert.is_true(documented("### lmp." .. name .. "\n"), "lmp." .. name .. " is not documented")
      end
    end
  end)

  it("documents every Pool method", function()
    for _, name in ipairs(public_methods(require("lmp.pool").Pool)) do
      assert.is_true(documented("### pool:" .. name .. "\n"), "pool:" .. name)
    end
  end)

  it("documents every AsyncResult, Executor and Future method", function()
    for _, name in ipairs(public_methods(require("lmp.pool").AsyncResult)) do
      assert.is_true(documented("r:" .. name .. "("), "AsyncResult:" .. name)
    end
    for _, name in ipairs(public_methods(require("lmp.executor").Executor)) do
      assert.is_true(documented("### executor:" .. name .. "\n"), "executor:" .. name)
    end
    for _, name in ipairs(public_methods(require("lmp.executor").Future)) do
      assert.is_true(documented("f:" .. name .. "("), "Future:" .. name)
    end
  end)

  it("documents every function of the C API in lmp.h", function()
    local header = helpers.read_file(helpers.root .. "/runtime/lmp.h")
    local count = 0
    for name in header:gmatch("\n[%w_ %*]-[ %*]([%w_]+)%(") do
      if name:match("^lmp_") or name:match("^luaopen_") then
        count = count + 1
        assert.is_true(documented("### " .. name .. "\n"), name .. " is not documented")
      end
    end
    assert.is_true(count >= 6)
  end)

  it("gives every documented function an example", function()
    for section in reference:gmatch("\n### [^\n]+\n(.-)\n#") do
      assert.is_truthy(section:find("```", 1, true), section:sub(1, 60))
    end
  end)
end)
