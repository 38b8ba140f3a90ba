/* An embedding host (docs/reference.md, "C embedding API"): a C program that runs Lua, uses
 * lmp in its own lua_State, hands lmp its own libuv loop, and serves as its
 * own worker executable, so that the C function it gives its Lua
 * (host.checksum) exists in the workers too.
 *
 * Build: make build/examples/embed-host, or against an installed lmp:
 *   cc -std=c99 -o embed-host host.c $(pkg-config --cflags --libs lmp)
 * Run:   build/examples/embed-host examples/embed/script.lua
 */
/* uv.h (included by lmp.h) needs POSIX types that strict C99 hides. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "lmp.h"

/* host.checksum(s) -> integer: the 32-bit FNV-1a hash of the bytes of s. */
static int host_checksum(lua_State *L) {
  size_t size, i;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &size);
  uint32_t hash = 2166136261u;
  for (i = 0; i < size; i++) {
    hash ^= s[i];
    hash *= 16777619u;
  }
  lua_pushinteger(L, (lua_Integer)hash);
  return 1;
}

static const luaL_Reg host_functions[] = {{"checksum", host_checksum}, {NULL, NULL}};

/* Gives a Lua state the global table `host`. The same function serves the
 * main state and, through lmp_worker_main, every worker's state. */
static void open_host(lua_State *L, void *ud) {
  (void)ud;
  luaL_newlib(L, host_functions);
  lua_setglobal(L, "host");
}

/* A heartbeat on the host's loop: it ticks whenever lmp turns that loop
 * (in pool:map, lmp_run ...), which shows both share one loop. */
static unsigned long heartbeats;

static void on_heartbeat(uv_timer_t *timer) {
  (void)timer;
  heartbeats++;
}

static int message_handler(lua_State *L) {
  const char *message = lua_tostring(L, 1);
  if (message == NULL) message = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, message, 1);
  return 1;
}

/* Runs the script at `path` in protected mode; reports an error. */
static int run_script(lua_State *L, const char *path) {
  int status;
  lua_pushcfunction(L, message_handler);
  status = luaL_loadfile(L, path);
  if (status == LUA_OK) status = lua_pcall(L, 0, 0, -2);
  if (status != LUA_OK) fprintf(stderr, "embed-host: %s\n", lua_tostring(L, -1));
  lua_settop(L, 0);
  return status;
}

int main(int argc, char **argv) {
  const char *script = argc > 1 ? argv[1] : "examples/embed/script.lua";
  uv_loop_t loop;
  uv_timer_t heartbeat;
  lua_State *L;
  char self[4096];
  ssize_t length;
  int status, closed;

  /* Pools in this host start the host's executable as workers: those
   * copies stop here, as workers with `host` in their Lua. */
  status = lmp_worker_main(argc, argv, open_host, NULL);
  if (status >= 0) return status;

  if (uv_loop_init(&loop) != 0) return EXIT_FAILURE;
  uv_timer_init(&loop, &heartbeat);
  uv_timer_start(&heartbeat, on_heartbeat, 0, 1);
  /* The heartbeat must not keep lmp_run turning the loop by itself. */
  uv_unref((uv_handle_t *)&heartbeat);

  L = luaL_newstate();
  if (L == NULL) return EXIT_FAILURE;
  lmp_use_huge_pages(L); /* big values: one page fault per 2 MB, not 512 */
  luaL_openlibs(L);
  open_host(L, NULL);
  /* The host's own file. Resolving the link, rather than passing
   * "/proc/self/exe" itself, keeps this right under valgrind too. */
  length = readlink("/proc/self/exe", self, sizeof self - 1);
  if (length <= 0) return EXIT_FAILURE;
  self[length] = '\0';
  lmp_set_worker_executable(L, self);
  lmp_set_loop(L, &loop); /* before the module opens */
  luaL_requiref(L, "lmp", luaopen_lmp, 1);
  lua_pop(L, 1);

  status = run_script(L, script);
  if (status == LUA_OK && lmp_get_loop(L) != &loop) {
    fprintf(stderr, "embed-host: lmp does not use the host's loop\n");
    status = LUA_ERRRUN;
  }
  /* Delivers the callbacks the script left pending. */
  if (status == LUA_OK && lmp_run(L) != 0) {
    fprintf(stderr, "embed-host: %s\n", lua_tostring(L, -1));
    status = LUA_ERRRUN;
  }
  printf("host: the heartbeat on the host's loop ticked while lmp waited: %s\n",
         heartbeats > 0 ? "yes" : "no");
  lua_close(L); /* stops the workers and closes lmp's handles */

  /* lmp never closes a loop it did not create: the host does, once its
   * own handles are closed. A busy loop here means lmp left a handle. */
  uv_close((uv_handle_t *)&heartbeat, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  closed = uv_loop_close(&loop);
  printf("host: loop closed %s\n", closed == 0 ? "cleanly" : uv_strerror(closed));
  return status == LUA_OK && closed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
