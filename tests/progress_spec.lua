-- Progress bars: drawn on stderr when it is a terminal (tested under a real
-- pseudo-terminal made by script(1)), and nothing otherwise.
local describe, it, assert, after_each = describe, it, assert, after_each
local _ENV = _G
local helpers = require "helpers"

local SCRIPT = [[
  local lmp = require "lmp"
  local pool <close> = lmp.Pool{processes = 2, progress = %s}
  local items = {}
  for i = 1, 30 do items[i] = i end
  local slow = function(x) local t = os.clock() while os.clock() - t < 0.01 do end return x end
  pool:map(slow, items, {chunksize = 1, progress = %s})
  for _ in pool:imap_unordered(slow, items, {chunksize = 2}) do end
  pool:starmap(function(a) return a end, {{1}, {2}, {3}})
  io.stdout:write("finished\n")
]]

local function under_terminal(code)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  -- script(1) gives the runner a pseudo-terminal for stdin, stdout, stderr.
  local status, out = helpers.run(("script -qec '%s %s' /dev/null"):format(helpers.runner, path))
  os.remove(path)
  return status, out
end

describe("progress bars", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("map(..., {progress = true}) draws done/total, rate, elapsed and eta in place", function()
    local status, out = under_terminal(SCRIPT:format("false", "true"))
    assert.equal(0, status)
    assert.matches("\rmap  %[#+%.*%] %d+/30 +%d+%%  %d+/s  elapsed 0:%d%d  eta 0:%d%d", out)
    assert.matches("\rmap  %[#+%] 30/30 100%%  %d+/s  elapsed 0:%d%d\27%[K\r?\n", out)
    -- only the map asked for one: the imap_unordered and starmap draw nothing
    assert.not_matches("imap_unordered", out)
    assert.not_matches("starmap", out)
    assert.matches("finished", out)
  end)

  it("Pool{progress = true} draws one for every map and imap", function()
    local status, out = under_terminal(SCRIPT:format("true", "nil"))
    assert.equal(0, status)
    assert.matches("\rmap  %[#+%] 30/30 100%%", out)
    assert.matches("\rimap_unordered  %[#+%] 30/30 100%%", out)
    assert.matches("\rstarmap  %[#+%] 3/3 100%%", out)
  end)

  it("draws nothing when stderr is not a terminal", function()
    local status, out, err = helpers.run_lua(SCRIPT:format("true", "true"), helpers.runner)
    assert.equal(0, status)
    assert.equal("finished\n", out)
    assert.equal("", err)
  end)

  it("refuses a progress option that is not a boolean", function()
    local status, _, err = helpers.run_lua([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      pool:map(print, {1}, {progress = "yes"})
    ]], helpers.runner)
    assert.equal(1, status)
    assert.matches("bad argument #3 to 'map' %(progress must be a boolean%)", err)
  end)
end)
