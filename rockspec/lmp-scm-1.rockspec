-- lmp for LuaRocks. From a checkout, with no network:
--   luarocks --lua-version 5.4 make rockspec/lmp-scm-1.rockspec [--tree=DIR]
--   luarocks --lua-version 5.4 test rockspec/lmp-scm-1.rockspec
-- The build is our Makefile (it needs pkg-config, Lua 5.4's headers and
-- libuv's). LuaRocks deploys the module, the runner `lmp` and the worker
-- `lmp-worker` into the tree; core.so finds the worker at
-- <tree>/lib/lua/5.4/lmp/../../../../bin/lmp-worker. The header, liblmp.a
-- and lmp.pc for C hosts stay in the rock's own directory, under embed/
-- (`luarocks show --rock-dir lmp` prints it), since LuaRocks deploys only
-- Lua modules, C modules and programs.
rockspec_format = "3.0"
package = "lmp"
version = "scm-1"
source = {
  url = "git+file://.",
}
description = {
  summary = "Multiprocessing for Lua 5.4: process pools, futures, callbacks",
  detailed = [[
lmp runs CPU-bound Lua code on every core, as Python's multiprocessing and
concurrent.futures do for Python: a pool of worker processes fed through
map, imap, apply_async and callbacks. Any Lua value crosses between
processes, functions with their upvalues included. A C runtime on libuv
with a Lua module on top; it can be embedded in a C host.]],
  license = "MIT",
  labels = {"multiprocessing", "parallel", "libuv"},
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = {header = "uv.h"},
}
build = {
  type = "make",
  build_variables = {
    CC = "$(CC)",
    CFLAGS = "$(CFLAGS)",
    LUA = "$(LUA)",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    LUADIR = "$(LUADIR)",
    CMODDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
    INCDIR = "$(PREFIX)/embed/include",
    LIBDIR = "$(PREFIX)/embed/lib",
    LUA = "$(LUA)",
  },
}
test = {
  type = "command",
  command = "make test",
}
