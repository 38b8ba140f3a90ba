/* Embedding: luaopen_lmp, the whole module from the library alone, lmp_run
 * and lmp_worker_main, which turns a process started by a pool into a
 * worker. The Lua modules compiled into the library are installed as
 * package.preload entries, so a host, the runner and workers never search
 * package.path for them. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "embed.h"
#include "lmp.h"
#include "worker.h"

static int load_embedded(lua_State *L) {
  const lmp__lua_source *source = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbuffer(L, source->code, source->size, source->chunkname) != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

static void install_preload(lua_State *L) {
  const lmp__lua_source *source;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (source = lmp__lua_sources; source->module; source++) {
    lua_pushlightuserdata(L, (void *)source);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, source->module);
  }
  lua_pushcfunction(L, luaopen_lmp_core);
  lua_setfield(L, -2, "lmp.core");
  lua_pop(L, 1);
}

int luaopen_lmp(lua_State *L) {
  install_preload(L);
  lua_getglobal(L, "require");
  lua_pushstring(L, "lmp");
  lua_call(L, 1, 1);
  return 1;
}

int lmp_run(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushstring(L, "lmp");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return -1;
  lua_getfield(L, -1, "run");
  lua_remove(L, -2);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) return -1;
  return 0;
}

int lmp_worker_main(int argc, char **argv, lmp_setup_fn setup, void *ud) {
  lua_State *L;
  int status;
  if (argc < 3 || strcmp(argv[1], LMP_WORKER_FLAG) != 0) return -1;
  if (lmp__become_worker(strtol(argv[2], NULL, 10)) != 0) return 1;
  L = luaL_newstate();
  if (L == NULL) return 1;
  lmp_use_huge_pages(L);
  luaL_openlibs(L);
  install_preload(L);
  if (setup) setup(L, ud);
  if (argc >= 4 && strcmp(argv[3], LMP_FORKSERVER_FLAG) == 0)
    status = lmp__serve_forks(L, strtol(argv[2], NULL, 10));
  else
    status = lmp__run_worker(L);
  lua_close(L);
  return status;
}
