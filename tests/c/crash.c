/* A test-only C module: crash.segfault() dies of SIGSEGV, as a buggy C
 * extension would, so the suite can prove a pool survives it. */
#include <signal.h>

#include <lauxlib.h>
#include <lua.h>

static int crash_segfault(lua_State *L) {
  (void)L;
  raise(SIGSEGV);
  return 0;
}

int luaopen_crash(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, crash_segfault);
  lua_setfield(L, -2, "segfault");
  return 1;
}
