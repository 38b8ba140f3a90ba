/* Lua's side of futex.c: core.sync_cell(fd) maps a lock's, semaphore's,
 * event's, condition's or barrier's cell from its memory file, and the
 * cell's methods try, release and sleep. A child process simply sleeps
 * in the kernel (cell:sleep); the main process waits as waiter.c says.
 * Lock and RLock get methods that take an uncontended lock in one short
 * call: each object its own, bound to its cell (core.bind_lock). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync.h"

/* This process's pid, kept (a lock's fast path asks it every time) once
 * a fork handler makes sure that a forked child forgets it. */
static int32_t my_pid;
static int pid_kept;
static void forget_pid(void) { my_pid = 0; }
static int32_t current_pid(void) {
  if (my_pid == 0 || !pid_kept) my_pid = (int32_t)getpid();
  return my_pid;
}

/* ---- cells ---------------------------------------------------------------- */

/* core.sync_cell(fd [, fresh]) -> the cell in the file's first bytes;
 * fresh: the file is new, its cell is set up here. */
static int core_sync_cell(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), fresh = lua_toboolean(L, 2);
  cell_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  void *p;
  box->map = NULL;
  luaL_setmetatable(L, CELL_META);
  p = mmap(NULL, sizeof(lmp_sync_cell), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return luaL_error(L, "lmp: cannot map a lock's memory: %s", strerror(errno));
  if ((box->map = malloc(sizeof *box->map)) == NULL) {
    munmap(p, sizeof(lmp_sync_cell));
    return luaL_error(L, "lmp: out of memory");
  }
  box->map->cell = p;
  box->map->refs = 1;
  if (fresh) lmp__sync_init(p);
  return 1;
}

/* The cell's methods have its metatable as upvalue: comparing with it is
 * quicker than luaL_checkudata's look-up by name, which a lock's fast
 * path would pay twice per acquire and release. */
static lmp_sync_cell *check_cell(lua_State *L) {
  cell_box *box = lua_touserdata(L, 1);
  int same = 0;
  if (box && lua_getmetatable(L, 1)) {
    same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
  }
  if (!same) box = luaL_checkudata(L, 1, CELL_META);
  if (box->map == NULL) luaL_error(L, "lmp: the lock's memory is closed");
  return box->map->cell;
}

static int cell_close(lua_State *L) {
  cell_box *box = luaL_checkudata(L, 1, CELL_META);
  if (box->map) lmp__map_unref(box->map);
  box->map = NULL;
  return 0;
}

static int cell_seq(lua_State *L) {
  lua_pushinteger(L, lmp__sync_seq(check_cell(L)));
  return 1;
}

/* cell:sleep(seen [, seconds]) -> whether a whole liveness period passed
 * with nothing changed (then a lock's holder should be checked). For a
 * process without an event loop to keep turning. */
static int cell_sleep(lua_State *L) {
  lmp_sync_cell *c = check_cell(L);
  uint32_t seen = (uint32_t)luaL_checkinteger(L, 2);
  int64_t timeout = LIVENESS_NS;
  if (!lua_isnoneornil(L, 3)) {
    double seconds = luaL_checknumber(L, 3);
    if (seconds * 1e9 < (double)LIVENESS_NS) timeout = seconds > 0 ? (int64_t)(seconds * 1e9) : 0;
  }
  lua_pushboolean(L, lmp__sync_sleep(c, seen, timeout, lmp__spin_ns() ? SHORT_SPIN_NS : 0) && timeout == LIVENESS_NS);
  return 1;
}

/* cell:lock_try(recursive, check_owner) -> acquired, whether the holder
 * before had died */
static int cell_lock_try(lua_State *L) {
  int r = lmp__lock_try(check_cell(L), current_pid(), lua_toboolean(L, 2), lua_toboolean(L, 3));
  lua_pushboolean(L, r != 0);
  lua_pushboolean(L, r == LMP_SYNC_OWNER_DIED);
  return 2;
}

/* cell:lock_waiting(delta): see lmp__lock_waiting. */
static int cell_lock_waiting(lua_State *L) {
  lmp__lock_waiting(check_cell(L), luaL_checkinteger(L, 2) > 0 ? 1 : -1);
  return 0;
}

static int cell_lock_release(lua_State *L) {
  lua_pushboolean(L, lmp__lock_release(check_cell(L), current_pid(), lua_toboolean(L, 2)) == 0);
  return 1;
}

/* cell:owner([alive]) -> holder's pid (0: free), depth, whether it is this
 * process [, whether the holder lives] */
static int cell_owner(lua_State *L) {
  lmp_sync_cell *c = check_cell(L);
  int32_t owner = __atomic_load_n(&c->owner, __ATOMIC_SEQ_CST);
  lua_pushinteger(L, owner);
  lua_pushinteger(L, owner ? __atomic_load_n(&c->depth, __ATOMIC_RELAXED) : 0);
  lua_pushboolean(L, owner != 0 && owner == current_pid());
  if (!lua_toboolean(L, 2)) return 3;
  lua_pushboolean(L, owner != 0 && (owner == current_pid() || lmp__process_alive(owner)));
  return 4;
}

/* cell:set_semaphore(value, maximum): a fresh cell's start (maximum -1: none). */
static int cell_set_semaphore(lua_State *L) {
  lmp_sync_cell *c = check_cell(L);
  c->value = (int32_t)luaL_checkinteger(L, 2);
  c->maximum = (int32_t)luaL_checkinteger(L, 3);
  return 0;
}

static int cell_semaphore_try(lua_State *L) {
  lua_pushboolean(L, lmp__semaphore_try(check_cell(L)));
  return 1;
}

static int cell_semaphore_release(lua_State *L) {
  lua_pushboolean(L, lmp__semaphore_release(check_cell(L)) == 0);
  return 1;
}

static int cell_value(lua_State *L) {
  lua_pushinteger(L, __atomic_load_n(&check_cell(L)->value, __ATOMIC_SEQ_CST));
  return 1;
}

/* cell:count_add(delta) -> the count after adding delta, or nil when that
 * would take it below 0 or above the cell's maximum (set_semaphore sets
 * both): then nothing changed. */
static int cell_count_add(lua_State *L) {
  lmp_sync_cell *c = check_cell(L);
  lua_Integer delta = luaL_checkinteger(L, 2);
  int32_t after;
  luaL_argcheck(L, delta >= INT32_MIN && delta <= INT32_MAX, 2, "delta out of range");
  if (lmp__counter_add(c, (int32_t)delta, &after) != 0) {
    lua_pushnil(L);
  } else {
    lua_pushinteger(L, after);
  }
  return 1;
}

static int cell_event_set(lua_State *L) {
  lmp__event_set(check_cell(L));
  return 0;
}

static int cell_event_clear(lua_State *L) {
  lmp__event_clear(check_cell(L));
  return 0;
}

static int cell_event_try(lua_State *L) {
  lua_pushboolean(L, __atomic_load_n(&check_cell(L)->value, __ATOMIC_SEQ_CST) != 0);
  return 1;
}

static int cell_condition_register(lua_State *L) {
  lmp__condition_register(check_cell(L));
  return 0;
}

static int cell_condition_take(lua_State *L) {
  lua_pushboolean(L, lmp__condition_take(check_cell(L)));
  return 1;
}

static int cell_condition_leave(lua_State *L) {
  lua_pushboolean(L, lmp__condition_leave(check_cell(L)));
  return 1;
}

static int cell_condition_tickets(lua_State *L) {
  lua_pushinteger(L, lmp__condition_tickets(check_cell(L)));
  return 1;
}

static int cell_condition_notify(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 2);
  if (n < 0) n = 0;
  if (n > UINT32_MAX) n = UINT32_MAX;
  lua_pushinteger(L, lmp__condition_notify(check_cell(L), (uint32_t)n));
  return 1;
}

/* cell:barrier_enter(parties) -> 1 and the index, 0 (not yet), or -1 (broken) */
static int cell_barrier_enter(lua_State *L) {
  lmp_sync_cell *c = check_cell(L);
  lua_Integer parties = luaL_checkinteger(L, 2);
  uint32_t index = 0;
  int r = lmp__barrier_enter(c, (uint32_t)parties, &index);
  lua_pushinteger(L, r);
  lua_pushinteger(L, index);
  return 2;
}

/* cell:barrier(what): "drain", "break", "leave" or "reset". */
static int cell_barrier(lua_State *L) {
  static const char *const whats[] = {"drain", "break", "leave", "reset", NULL};
  lmp_sync_cell *c = check_cell(L);
  switch (luaL_checkoption(L, 2, NULL, whats)) {
    case 0: lmp__barrier_drain(c); break;
    case 1: lmp__barrier_break(c); break;
    case 2: lmp__barrier_leave(c); break;
    default: lmp__barrier_reset(c); break;
  }
  return 0;
}

/* cell:barrier_state() -> state, parties inside */
static int cell_barrier_state(lua_State *L) {
  uint32_t count = 0;
  lua_pushinteger(L, lmp__barrier_state(check_cell(L), &count));
  lua_pushinteger(L, count);
  return 2;
}

/* ---- Lock and RLock methods, fast -----------------------------------------------
 * Without contention, acquire and release are one call into C; anything
 * else (arguments, contention, an error to raise, a cell not mapped yet)
 * goes to the Lua method. A C function per method, so that no flag is
 * read per call, and no more calls into Lua's API than it takes: the
 * cost of an uncontended acquire and release is mostly these calls.
 * The class's methods (Lock.acquire(lock)) find the object's cell in
 * sync.lua's table of cells (upvalue 1; upvalue 2 is the Lua method);
 * each object's own methods have it bound (below). */

/* The cell of the object at index 1 if this process mapped it, else
 * NULL; pushes above the arguments, which stay as they are. The
 * metatable (upvalue 3) is compared, not trusted: the table of cells is a
 * Lua table that Lua code could fill with anything. */
static lmp_sync_cell *fast_cell(lua_State *L) {
  cell_box *box;
  lua_pushvalue(L, 1);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TUSERDATA || !lua_getmetatable(L, -1) ||
      !lua_rawequal(L, -1, lua_upvalueindex(3)))
    return NULL;
  box = lua_touserdata(L, -2);
  return box->map ? box->map->cell : NULL;
}

static int lock_method_done(lua_State *L, int status, lua_KContext context) {
  (void)status;
  (void)context;
  return lua_gettop(L);
}

/* Calls the Lua method (upvalue slow) with the arguments as they came. */
static int slow_method(lua_State *L, int nargs, int slow) {
  lua_settop(L, nargs);
  lua_pushvalue(L, lua_upvalueindex(slow));
  lua_insert(L, 1);
  /* With a continuation, so that a wait inside lmp.spawn can yield. */
  lua_callk(L, nargs, LUA_MULTRET, 0, lock_method_done);
  return lua_gettop(L);
}

typedef lmp_sync_cell *(*cell_finder)(lua_State *L);

/* acquire(), acquire(true) and acquire(false) (the try-lock) are taken
 * here when the lock is free; acquire(false) also fails here. What a
 * failed try does next (wait, raise) is the Lua method's (upvalue slow).
 * find gives the cell, or NULL for the Lua method. */
static int acquire_with(lua_State *L, int recursive, cell_finder find, int slow) {
  int nargs = lua_gettop(L), block;
  lmp_sync_cell *c;
  if (nargs == 1 || (nargs == 2 && lua_isboolean(L, 2))) {
    block = nargs == 1 || lua_toboolean(L, 2);
    if ((c = find(L)) != NULL) {
      if (lmp__lock_try(c, current_pid(), recursive, 0) != 0) {
        lua_pushboolean(L, 1);
        return 1;
      }
      if (!block) {
        lua_pushboolean(L, 0);
        return 1;
      }
    }
  }
  return slow_method(L, nargs, slow);
}

/* release() when this process may release the lock. */
static int release_with(lua_State *L, int recursive, cell_finder find, int slow) {
  int nargs = lua_gettop(L);
  lmp_sync_cell *c;
  if (nargs == 1 && (c = find(L)) != NULL && lmp__lock_release(c, current_pid(), recursive) == 0)
    return 0;
  return slow_method(L, nargs, slow);
}

/* ---- methods bound to one lock --------------------------------------------------
 * Each Lock and RLock object carries its own acquire and release, found
 * by the method call in the object itself (no __index look-up) and bound
 * to its cell (no look-up of the cell either): the least Lua can do per
 * call. Upvalue 1: the object; 2: its cell, checked when bound; 3: the
 * Lua method for everything else (another object as self, arguments,
 * contention, errors). */
static lmp_sync_cell *bound_cell(lua_State *L) {
  cell_box *box;
  if (!lua_rawequal(L, 1, lua_upvalueindex(1))) return NULL;
  box = lua_touserdata(L, lua_upvalueindex(2));
  return box->map ? box->map->cell : NULL;
}

static int bound_lock_acquire(lua_State *L) { return acquire_with(L, 0, bound_cell, 3); }
static int bound_rlock_acquire(lua_State *L) { return acquire_with(L, 1, bound_cell, 3); }
static int bound_lock_release(lua_State *L) { return release_with(L, 0, bound_cell, 3); }
static int bound_rlock_release(lua_State *L) { return release_with(L, 1, bound_cell, 3); }

/* core.bind_lock(object, cell, slow_acquire, slow_release, recursive) ->
 * acquire, release */
static int core_bind_lock(lua_State *L) {
  int recursive = lua_toboolean(L, 5);
  luaL_checkudata(L, 2, CELL_META);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, recursive ? bound_rlock_acquire : bound_lock_acquire, 3);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 4);
  lua_pushcclosure(L, recursive ? bound_rlock_release : bound_lock_release, 3);
  return 2;
}

static int lock_acquire(lua_State *L) { return acquire_with(L, 0, fast_cell, 2); }
static int rlock_acquire(lua_State *L) { return acquire_with(L, 1, fast_cell, 2); }
static int lock_release(lua_State *L) { return release_with(L, 0, fast_cell, 2); }
static int rlock_release(lua_State *L) { return release_with(L, 1, fast_cell, 2); }

/* core.lock_method(cells, slow, recursive, releasing) -> the method */
static int core_lock_method(lua_State *L) {
  static const lua_CFunction methods[2][2] = {{lock_acquire, lock_release},
                                              {rlock_acquire, rlock_release}};
  int recursive = lua_toboolean(L, 3), releasing = lua_toboolean(L, 4);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  luaL_getmetatable(L, CELL_META);
  lua_pushcclosure(L, methods[recursive][releasing], 3);
  return 1;
}

static const luaL_Reg cell_methods[] = {
    {"seq", cell_seq},
    {"sleep", cell_sleep},
    {"sleep_beside_loop", lmp__cell_sleep_beside_loop},
    {"waiter", lmp__cell_waiter},
    {"lock_try", cell_lock_try},
    {"lock_release", cell_lock_release},
    {"lock_waiting", cell_lock_waiting},
    {"owner", cell_owner},
    {"set_semaphore", cell_set_semaphore},
    {"semaphore_try", cell_semaphore_try},
    {"semaphore_release", cell_semaphore_release},
    {"value", cell_value},
    {"count_add", cell_count_add},
    {"event_set", cell_event_set},
    {"event_clear", cell_event_clear},
    {"event_try", cell_event_try},
    {"condition_register", cell_condition_register},
    {"condition_take", cell_condition_take},
    {"condition_leave", cell_condition_leave},
    {"condition_notify", cell_condition_notify},
    {"condition_tickets", cell_condition_tickets},
    {"barrier_enter", cell_barrier_enter},
    {"barrier", cell_barrier},
    {"barrier_state", cell_barrier_state},
    {"close", cell_close},
    {NULL, NULL}};


/* core.process_alive(pid) -> whether process pid lives (a zombie does
 * not): what a lock's waiter asks of a holder that has been quiet. */
static int core_process_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  lua_pushboolean(L, pid > 0 && pid <= INT32_MAX && lmp__process_alive((int32_t)pid));
  return 1;
}

static const luaL_Reg sync_functions[] = {
    {"sync_cell", core_sync_cell}, {"lock_method", core_lock_method},
    {"bind_lock", core_bind_lock}, {"process_alive", core_process_alive}, {NULL, NULL}};

void lmp__open_sync(lua_State *L) {
  if (!pid_kept && pthread_atfork(NULL, NULL, forget_pid) == 0) pid_kept = 1;
  lmp__sync_meta(L, CELL_META, cell_methods, cell_close);
  lmp__open_waiter(L);
  luaL_setfuncs(L, sync_functions, 0);
  /* The methods, for the Lua side to call without looking them up. */
  luaL_getmetatable(L, CELL_META);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "sync_cell_methods");
  lua_pop(L, 1);
}
