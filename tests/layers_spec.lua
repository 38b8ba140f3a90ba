-- The runtime's C files form layers (docs/architecture.md): each uses only
-- the files of the layers below it and those of its own layer listed
-- before it in the Makefile's RUNTIME list, one layer a line. These tests
-- keep the import graph from growing a cycle again.
local describe, it, assert = describe, it, assert
local _ENV = _G
local helpers = require "helpers"

-- The Makefile's RUNTIME list: its layers (one a line) and each file's
-- position in it.
local function runtime_layers()
  local makefile = helpers.read_file(helpers.root .. "/Makefile")
  local list = assert(makefile:match("\nRUNTIME := (.-[^\\])\n"), "no RUNTIME list in the Makefile")
  local layer_of, position, layers, n = {}, {}, {}, 0
  for line in (list .. "\n"):gmatch("([^\n]*)\n") do
    local files = {}
    for name in line:gsub("\\", ""):gmatch("[%w_]+") do
      files[#files + 1] = name
      n = n + 1
      layer_of[name], position[name] = #layers + 1, n
    end
    layers[#layers + 1] = files
  end
  return layers, layer_of, position
end

-- What tools/layers.sh prints (edges, then the verdict) and its status.
local function layers_output()
  local status, out, err = helpers.run(helpers.root .. "/tools/layers.sh " .. helpers.build)
  return out .. err, status
end

describe("the runtime's layers", function()
  it("tools/layers.sh finds no cycle in the import graph of runtime/", function()
    local out, status = layers_output()
    assert.is_truthy(out:match("no cycle\n$"), out)
    assert.are.equal(0, status)
  end)

  it("each file uses only files of lower layers or listed before it in its own", function()
    local _, layer_of, position = runtime_layers()
    local out = layers_output()
    local edges = 0
    for user, provider in out:gsub("no cycle\n$", ""):gmatch("([%w_]+) ([%w_]+)\n") do
      assert.is_truthy(position[user], user .. " is not in the Makefile's RUNTIME list")
      assert.is_truthy(position[provider], provider .. " is not in the Makefile's RUNTIME list")
      assert.is_true(position[provider] < position[user],
        user .. " (layer " .. layer_of[user] .. ") uses " .. provider .. " (layer "
          .. layer_of[provider] .. "), listed after it")
      edges = edges + 1
    end
    assert.is_true(edges > 20, "tools/layers.sh printed no edges:\n" .. out)
  end)

  it("no runtime file includes the header of a layer above its own", function()
    local layers, layer_of = runtime_layers()
    assert.is_true(#layers >= 6)
    -- A header named after a file belongs to that file's layer; these
    -- headers declare a whole layer. lmp.h is the public API, for all.
    local header_layer = {
      value = layer_of.encode, value_tags = layer_of.encode, transport = layer_of.process, worker = layer_of.worker,
    }
    for _, files in ipairs(layers) do
      for _, name in ipairs(files) do
        local source = helpers.read_file(helpers.root .. "/runtime/" .. name .. ".c")
        for header in source:gmatch('#include "([%w_]+)%.h"') do
          if header ~= "lmp" then
            local layer = header_layer[header] or layer_of[header]
            assert.is_truthy(layer, name .. ".c includes " .. header .. ".h, of no known layer")
            assert.is_true(layer <= layer_of[name],
              name .. ".c (layer " .. layer_of[name] .. ") includes " .. header .. ".h (layer " .. layer .. ")")
          end
        end
      end
    end
  end)
end)
