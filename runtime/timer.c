/* Timers for the Lua layer (core.timer): a libuv timer whose callback
 * calls a Lua function through the loop's protected path. */
#include <stdlib.h>

#include <uv.h>

#include "loop.h"

#define TIMER_META "lmp.Timer"

typedef struct timer {
  uv_timer_t handle;
  lua_State *L; /* NULL once the Lua object is gone */
  int callback_ref;
} timer;

static void timer_free(uv_handle_t *handle) {
  free(handle->data);
}

static void on_timer(uv_timer_t *handle) {
  timer *t = handle->data;
  if (t->L == NULL || t->callback_ref == LUA_NOREF) return;
  lua_rawgeti(t->L, LUA_REGISTRYINDEX, t->callback_ref);
  lmp__call_protected(t->L, 0);
}

static timer **check_timer(lua_State *L) {
  return luaL_checkudata(L, 1, TIMER_META);
}

/* Closing is idempotent: __gc, __close and close() share it. */
static int timer_close(lua_State *L) {
  timer **box = check_timer(L);
  timer *t = *box;
  if (t == NULL) return 0;
  *box = NULL;
  if (lmp__parents_handle((uv_handle_t *)&t->handle)) return 0; /* the parent's, in a copy */
  luaL_unref(L, LUA_REGISTRYINDEX, t->callback_ref);
  t->callback_ref = LUA_NOREF;
  t->L = NULL;
  uv_close((uv_handle_t *)&t->handle, timer_free);
  return 0;
}

/* The longest timer: about 3,000 years, far inside uint64_t milliseconds. */
#define TIMER_MAX_SECONDS 1e11

/* core.timer(seconds, fn [, repeat_seconds]) */
static int core_timer(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  double repeat = luaL_optnumber(L, 3, 0);
  uv_loop_t *loop;
  timer **box;
  timer *t;
  /* NaN would make a wait that never ends; a span beyond uint64_t
   * milliseconds would be undefined in the conversion below; longer
   * than TIMER_MAX_SECONDS is "never" for any timer. */
  luaL_argcheck(L, seconds == seconds, 1, "seconds must not be NaN");
  luaL_argcheck(L, repeat == repeat, 3, "seconds must not be NaN");
  if (seconds > TIMER_MAX_SECONDS) seconds = TIMER_MAX_SECONDS;
  if (repeat > TIMER_MAX_SECONDS) repeat = TIMER_MAX_SECONDS;
  int r;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  /* The loop first: it refuses in a forked worker, before anything is
   * allocated (each refused lmp.sleep there leaked a timer). */
  loop = lmp__loop(L);
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, TIMER_META);
  lua_pushvalue(L, 2);
  r = luaL_ref(L, LUA_REGISTRYINDEX);
  t = calloc(1, sizeof *t);
  if (t == NULL || uv_timer_init(loop, &t->handle) != 0) {
    free(t);
    luaL_unref(L, LUA_REGISTRYINDEX, r);
    return luaL_error(L, "lmp: cannot make a timer");
  }
  t->handle.data = t;
  t->L = lmp__main_thread(L);
  t->callback_ref = r;
  *box = t; /* the box's finalizer closes the handle from here on */
  /* The loop's clock stands still while Lua runs; without this a timer
   * made after a long computation would fire at once. */
  uv_update_time(loop);
  r = uv_timer_start(&t->handle, on_timer, (uint64_t)(seconds > 0 ? seconds * 1000 + 0.999 : 0),
                     (uint64_t)(repeat > 0 ? repeat * 1000 : 0));
  if (r != 0) return luaL_error(L, "lmp: cannot start a timer: %s", uv_strerror(r));
  return 1;
}

static const luaL_Reg timer_methods[] = {{"close", timer_close}, {NULL, NULL}};

static const luaL_Reg timer_functions[] = {{"timer", core_timer}, {NULL, NULL}};

void lmp__open_timer(lua_State *L) {
  if (luaL_newmetatable(L, TIMER_META)) {
    luaL_newlib(L, timer_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, timer_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, timer_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, timer_functions, 0);
}
