/* lmp script.lua [args]: runs a script like lua5.4 does, then turns the
 * event loop until every pending callback has fired, closes the pools and
 * exits. The runner is a worker executable too. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lmp.h"

static const char *progname = "lmp";

static int message_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

static int docall(lua_State *L, int nargs) {
  int base = lua_gettop(L) - nargs, status;
  lua_pushcfunction(L, message_handler);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, 0, base);
  lua_remove(L, base);
  return status;
}

static int finish(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "run");
  lua_call(L, 0, 0);
  lua_getfield(L, -1, "_shutdown");
  lua_call(L, 0, 0);
  return 0;
}

int main(int argc, char **argv) {
  lua_State *L;
  int status, i;
  char self[PATH_MAX];
  ssize_t n;
  status = lmp_worker_main(argc, argv, NULL, NULL);
  if (status >= 0) return status;
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args]\n", progname);
    return 2;
  }
  L = luaL_newstate();
  if (L == NULL) return 1;
  lmp_use_huge_pages(L);
  luaL_openlibs(L);
  n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    lmp_set_worker_executable(L, self);
  }
  luaL_requiref(L, "lmp", luaopen_lmp, 0);
  lua_pop(L, 1);
  /* arg as lua.c makes it: arg[0] the script, arg[-1] the runner. */
  lua_createtable(L, argc - 2, 2);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  status = luaL_loadfile(L, strcmp(argv[1], "-") == 0 ? NULL : argv[1]);
  if (status == LUA_OK) {
    for (i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    status = docall(L, argc - 2);
  }
  if (status == LUA_OK) {
    lua_pushcfunction(L, finish);
    status = docall(L, 0);
  }
  report(L, status);
  lua_close(L);
  return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
