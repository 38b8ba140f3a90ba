-- The README's first command, `make setup example`, on a new machine: the
-- packages (pkg-config among them) are installed by `setup` in the same make
-- run that then compiles. The build must ask pkg-config for its flags only
-- once setup has run, never when make reads the Makefile.
local describe, it, assert = describe, it, assert
local _ENV = _G
local helpers = require "helpers"

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

describe("make setup", function()
  it("builds in the same run on a machine where pkg-config only works after setup", function()
    local status, out = helpers.run("mktemp -d")
    assert.equal(0, status)
    local dir = out:gsub("%s+$", "")
    -- A pkg-config that fails, as a missing one would, until setup has run.
    local fake = dir .. "/pkg-config"
    local f = assert(io.open(fake, "w"))
    f:write("#!/bin/sh\n",
            "echo \"$*\" >> ", quote(dir .. "/calls"), "\n",
            "[ -e ", quote(dir .. "/installed"), " ] || { echo 'pkg-config: not found' >&2; exit 127; }\n",
            "exec pkg-config \"$@\"\n")
    f:close()
    local command = ("chmod +x %s && make -s -j2 -C %s BUILD=%s PKG_CONFIG=%s SETUP=%s setup %s")
      :format(quote(fake), quote(helpers.root), quote(dir .. "/build"), quote(fake),
              quote("sleep 0.2; touch " .. quote(dir .. "/installed")),
              quote(dir .. "/build/bin/lmp-worker"))
    local code, stdout, stderr = helpers.run(command)
    local calls = helpers.read_file(dir .. "/calls") or ""
    local built = io.open(dir .. "/build/bin/lmp-worker") ~= nil
    helpers.run("rm -rf " .. quote(dir))
    assert(code == 0 and built, ("make failed (%s)\n%s%s"):format(tostring(code), stdout, stderr))
    -- Each flag is asked for once, after setup: none of the calls failed.
    local _, count = calls:gsub("\n", "")
    assert.equal(4, count)
  end)
end)

-- The Lua half is compiled into the library by tools/embed_lua.lua. A
-- module with a syntax error must fail the build with the Lua error's own
-- message, and leave no generated file that the next build would take as
-- done (it once left a truncated one: a misleading link error followed).
describe("embedding the Lua modules", function()
  it("a module with a syntax error fails the build with its message and leaves no half file", function()
    local status, out = helpers.run("mktemp -d")
    assert.equal(0, status)
    local dir = out:gsub("%s+$", "")
    local broken = dir .. "/broken.lua"
    local f = assert(io.open(broken, "w"))
    f:write("local x = 1\nreturn function( x end\n")
    f:close()
    local generated = dir .. "/build/gen/lua_sources.c"
    -- The Makefile's own rule, with the broken module after a good one.
    local code, stdout, stderr = helpers.run(("make -s -C %s BUILD=%s LUA_MODULES=%s %s")
      :format(quote(helpers.root), quote(dir .. "/build"),
              quote(helpers.root .. "/lua/lmp/init.lua " .. broken), quote(generated)))
    local _, listing = helpers.run("ls -A " .. quote(dir .. "/build/gen"))
    helpers.run("rm -rf " .. quote(dir))
    assert.is_not.equal(0, code)
    assert.matches("broken.lua:2: ", stdout .. stderr, 1, true)
    assert.matches("')' expected", stdout .. stderr, 1, true)
    assert.equal("", listing)
  end)
end)

-- `make` with no goal builds the module, the library and both programs (the
-- Makefile's first rule was once a helper's, so a bare make built nothing).
describe("make with no goal", function()
  it("builds everything", function()
    local status, out = helpers.run("mktemp -d")
    assert.equal(0, status)
    local dir = out:gsub("%s+$", "")
    local code, stdout, stderr = helpers.run(("make -n -C %s BUILD=%s")
      :format(quote(helpers.root), quote(dir .. "/build")))
    helpers.run("rm -rf " .. quote(dir))
    assert.equal(0, code, stderr)
    for _, target in ipairs{"/build/lmp/core.so", "/build/liblmp.a", "/build/bin/lmp ",
                            "/build/bin/lmp-worker "} do
      assert.truthy(stdout:find(dir .. target, 1, true), target .. " is not built:\n" .. stdout)
    end
  end)
end)
