/* Stop signals for the Lua layer (core.watch_stop_signals): SIGTERM and
 * SIGINT, heard on the loop, call a Lua function through the loop's
 * protected path, so that a process serving in the foreground (a
 * manager's get_server():serve_forever()) ends cleanly: its socket
 * removed, its clients told, rather than killed in the middle. */
#include <signal.h>
#include <stdlib.h>

#include <uv.h>

#include "loop.h"

#define STOP_SIGNALS_META "lmp.StopSignals"

typedef struct stop_signals {
  uv_signal_t term, interrupt;
  lua_State *L; /* NULL once the Lua object is gone */
  int callback_ref;
  int open_handles; /* freed at zero */
} stop_signals;

static void stop_signals_closed(uv_handle_t *handle) {
  stop_signals *s = handle->data;
  if (--s->open_handles == 0) free(s);
}

static void on_stop_signal(uv_signal_t *handle, int signum) {
  stop_signals *s = handle->data;
  if (s->L == NULL || s->callback_ref == LUA_NOREF) return;
  lua_rawgeti(s->L, LUA_REGISTRYINDEX, s->callback_ref);
  lua_pushstring(s->L, signum == SIGTERM ? "SIGTERM" : "SIGINT");
  lmp__call_protected(s->L, 1);
}

/* Stops watching and closes both handles; the signals' dispositions go
 * back to libuv's (the default). Idempotent: __gc, __close and close(). */
static int stop_signals_close(lua_State *L) {
  stop_signals **box = luaL_checkudata(L, 1, STOP_SIGNALS_META);
  stop_signals *s = *box;
  if (s == NULL) return 0;
  *box = NULL;
  if (lmp__parents_handle((uv_handle_t *)&s->term)) return 0; /* the parent's, in a copy */
  luaL_unref(L, LUA_REGISTRYINDEX, s->callback_ref);
  s->callback_ref = LUA_NOREF;
  s->L = NULL;
  uv_close((uv_handle_t *)&s->term, stop_signals_closed);
  uv_close((uv_handle_t *)&s->interrupt, stop_signals_closed);
  return 0;
}

/* core.watch_stop_signals(fn) -> watcher: fn("SIGTERM") or fn("SIGINT")
 * when the process gets one, while the loop turns, until watcher:close().
 * The watcher does not keep the loop turning by itself. */
static int core_watch_stop_signals(lua_State *L) {
  uv_loop_t *loop;
  stop_signals **box, *s;
  int r;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  loop = lmp__loop(L); /* may refuse: before anything is allocated */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, STOP_SIGNALS_META);
  s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "lmp: not enough memory");
  s->callback_ref = LUA_NOREF;
  if ((r = uv_signal_init(loop, &s->term)) != 0) {
    free(s);
    return luaL_error(L, "lmp: cannot watch signals: %s", uv_strerror(r));
  }
  s->term.data = s;
  s->open_handles = 1;
  if ((r = uv_signal_init(loop, &s->interrupt)) != 0) {
    uv_close((uv_handle_t *)&s->term, stop_signals_closed);
    return luaL_error(L, "lmp: cannot watch signals: %s", uv_strerror(r));
  }
  s->interrupt.data = s;
  s->open_handles = 2;
  s->L = lmp__main_thread(L);
  *box = s; /* the box's finalizer closes the handles from here on */
  lua_pushvalue(L, 1);
  s->callback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if ((r = uv_signal_start(&s->term, on_stop_signal, SIGTERM)) != 0 ||
      (r = uv_signal_start(&s->interrupt, on_stop_signal, SIGINT)) != 0)
    return luaL_error(L, "lmp: cannot watch signals: %s", uv_strerror(r));
  uv_unref((uv_handle_t *)&s->term);
  uv_unref((uv_handle_t *)&s->interrupt);
  return 1;
}

static const luaL_Reg stop_signals_methods[] = {{"close", stop_signals_close}, {NULL, NULL}};

static const luaL_Reg stop_signals_functions[] = {
    {"watch_stop_signals", core_watch_stop_signals}, {NULL, NULL}};

void lmp__open_stop_signals(lua_State *L) {
  if (luaL_newmetatable(L, STOP_SIGNALS_META)) {
    luaL_newlib(L, stop_signals_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, stop_signals_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, stop_signals_close);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, "a signal watcher belongs to the process that made it");
    lua_setfield(L, -2, "__lmp_nosend");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, stop_signals_functions, 0);
}
