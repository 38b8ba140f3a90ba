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
