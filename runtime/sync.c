/* Lua's side of futex.c: core.sync_cell(fd) maps a lock's, semaphore's,
 * event's or condition's cell from its memory file, and the cell's
 * methods try, release and sleep. A child process simply sleeps in the
 * kernel (cell:sleep). The main process must keep its event loop turning
 * while it waits, so there a waiter (cell:waiter()) hands the sleep to a
 * helper thread, which wakes the loop with a uv_async once the cell
 * changes; the Lua side then tries again on the main thread. Helper
 * threads are kept for the next wait once their sleep ends. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uv.h>

#include "transport.h"

#define CELL_META "lmp.SyncCell"
#define WAITER_META "lmp.SyncWaiter"
#define WAKER_META "lmp.SyncWaker"

/* How long a waiter sleeps before it checks that a lock's holder still
 * lives (a holder that dies wakes nobody): the only timed wake-up, and it
 * decides nothing but that. */
#define LIVENESS_NS 500000000

/* A child watches the cell this long before it sleeps (when the machine
 * has a CPU to spare): a lock held for a few instructions is released
 * sooner than a sleep and a wake-up take, and a longer spin only steals
 * the CPU from the process that would make the change. */
#define SHORT_SPIN_NS 3000

/* A cell's mapping in this process, shared by its Lua object and the
 * helper thread sleeping on it, and unmapped when the last lets go. */
typedef struct cell_map {
  lmp_sync_cell *cell;
  int refs; /* atomic */
} cell_map;

typedef struct cell_box {
  cell_map *map; /* NULL once closed */
} cell_box;

static void map_unref(cell_map *m) {
  if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_SEQ_CST) == 0) {
    munmap(m->cell, sizeof *m->cell);
    free(m);
  }
}

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
  if (box->map) map_unref(box->map);
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

/* ---- the main process's waits: helper threads ------------------------------
 *
 * A helper sleeps on one cell for one waiter; the mutex guards the
 * hand-over both ways and the list of idle helpers. The waker (a uv_async
 * on lmp's loop) is what a helper wakes the loop with; it keeps the loop
 * alive while a waiter is armed, so that a wait with no timer and no
 * worker is not taken for one that nothing can end. */
typedef struct waiter waiter;

typedef struct helper {
  pthread_cond_t wake;
  struct helper *next_idle;
  cell_map *map; /* the cell to sleep on, while a request is there */
  uint32_t seen;
  int request;
  waiter *waiter; /* NULL once the waiter left */
} helper;

struct waiter {
  cell_map *map;  /* a reference; NULL once closed */
  helper *helper; /* asleep for this waiter, or NULL */
  int done;       /* a helper came back for it */
  int quiet;      /* and its whole sleep passed with no change */
  int counted;    /* keeps the loop alive (main thread only) */
};

static pthread_mutex_t helpers_mutex = PTHREAD_MUTEX_INITIALIZER;
static helper *idle_helpers;
static uv_async_t *waker; /* guarded by helpers_mutex; NULL when closed */
static int armed_waiters;  /* main thread only */

static void *helper_main(void *arg) {
  helper *h = arg;
  pthread_mutex_lock(&helpers_mutex);
  for (;;) {
    cell_map *m;
    uint32_t seen;
    int quiet;
    while (!h->request) pthread_cond_wait(&h->wake, &helpers_mutex);
    m = h->map;
    seen = h->seen;
    pthread_mutex_unlock(&helpers_mutex);
    quiet = lmp__sync_sleep(m->cell, seen, LIVENESS_NS, 0);
    pthread_mutex_lock(&helpers_mutex);
    if (h->waiter) {
      h->waiter->done = 1;
      h->waiter->quiet = quiet;
      h->waiter->helper = NULL;
      if (waker) uv_async_send(waker);
    }
    h->waiter = NULL;
    h->request = 0;
    h->map = NULL;
    map_unref(m);
    h->next_idle = idle_helpers;
    idle_helpers = h;
  }
  return NULL;
}

/* A new helper, or NULL. Called with the mutex held. Signals stay with
 * the main thread: a helper blocks them all. */
static helper *new_helper(void) {
  helper *h = calloc(1, sizeof *h);
  pthread_t thread;
  pthread_attr_t attr;
  sigset_t all, old;
  int r;
  if (h == NULL) return NULL;
  if (pthread_cond_init(&h->wake, NULL) != 0) {
    free(h);
    return NULL;
  }
  if (pthread_attr_init(&attr) != 0) {
    pthread_cond_destroy(&h->wake);
    free(h);
    return NULL;
  }
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  r = pthread_create(&thread, &attr, helper_main, h);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (r != 0) {
    pthread_cond_destroy(&h->wake);
    free(h);
    return NULL;
  }
  return h;
}

static void on_waker(uv_async_t *handle) {
  (void)handle; /* the turn it ends is what the waiting Lua code needs */
}

static void waker_closed(uv_handle_t *handle) { free(handle); }

/* The waker's box, made after the loop so that it is finalized first. */
static int waker_gc(lua_State *L) {
  uv_async_t *a;
  (void)L;
  pthread_mutex_lock(&helpers_mutex);
  a = waker;
  waker = NULL;
  pthread_mutex_unlock(&helpers_mutex);
  if (a) uv_close((uv_handle_t *)a, waker_closed);
  return 0;
}

static void open_waker(lua_State *L) {
  uv_loop_t *loop;
  uv_async_t *a;
  if (waker) return;
  loop = lmp__loop(L);
  lua_newuserdatauv(L, 1, 0);
  luaL_setmetatable(L, WAKER_META);
  if ((a = malloc(sizeof *a)) == NULL) luaL_error(L, "lmp: out of memory");
  if (uv_async_init(loop, a, on_waker) != 0) {
    free(a);
    luaL_error(L, "lmp: cannot wake the event loop from a lock's waiter");
  }
  uv_unref((uv_handle_t *)a);
  pthread_mutex_lock(&helpers_mutex);
  waker = a;
  pthread_mutex_unlock(&helpers_mutex);
  /* The registry keeps the box (and so the waker) until the state closes. */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &waker);
}

static void count_armed(waiter *w, int on) {
  if (w->counted == on) return;
  w->counted = on;
  armed_waiters += on ? 1 : -1;
  if (waker == NULL) return;
  if (on && armed_waiters == 1) uv_ref((uv_handle_t *)waker);
  if (!on && armed_waiters == 0) uv_unref((uv_handle_t *)waker);
}

/* cell:waiter() -> a waiter for one wait of the main process; close it
 * when the wait is over. */
static int cell_waiter(lua_State *L) {
  cell_box *box = luaL_checkudata(L, 1, CELL_META);
  waiter *w;
  if (box->map == NULL) return luaL_error(L, "lmp: the lock's memory is closed");
  w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, WAITER_META);
  open_waker(L);
  __atomic_add_fetch(&box->map->refs, 1, __ATOMIC_SEQ_CST);
  w->map = box->map;
  return 1;
}

static waiter *check_waiter(lua_State *L) {
  waiter *w = luaL_checkudata(L, 1, WAITER_META);
  if (w->map == NULL) luaL_error(L, "lmp: the waiter is closed");
  return w;
}

/* waiter:arm(seen): a helper sleeps until the cell's seq differs from
 * seen, then wakes the loop. Nothing to do while one still sleeps for
 * this waiter: the change it waits for wakes it. */
static int waiter_arm(lua_State *L) {
  waiter *w = check_waiter(L);
  uint32_t seen = (uint32_t)luaL_checkinteger(L, 2);
  helper *h;
  pthread_mutex_lock(&helpers_mutex);
  if (w->helper) {
    pthread_mutex_unlock(&helpers_mutex);
    return 0;
  }
  if ((h = idle_helpers) != NULL) {
    idle_helpers = h->next_idle;
  } else if ((h = new_helper()) == NULL) {
    pthread_mutex_unlock(&helpers_mutex);
    return luaL_error(L, "lmp: cannot start a thread to wait for a lock");
  }
  __atomic_add_fetch(&w->map->refs, 1, __ATOMIC_SEQ_CST);
  h->map = w->map;
  h->seen = seen;
  h->waiter = w;
  h->request = 1;
  w->helper = h;
  w->done = 0;
  pthread_cond_signal(&h->wake);
  pthread_mutex_unlock(&helpers_mutex);
  count_armed(w, 1);
  return 0;
}

/* waiter:quiet() -> whether the helper came back after a whole liveness
 * period with no change (then a lock's holder should be checked). */
static int waiter_quiet(lua_State *L) {
  waiter *w = check_waiter(L);
  int quiet = 0, done;
  pthread_mutex_lock(&helpers_mutex);
  done = w->done;
  if (done) {
    quiet = w->quiet;
    w->done = 0;
  }
  pthread_mutex_unlock(&helpers_mutex);
  if (done) count_armed(w, 0);
  lua_pushboolean(L, quiet);
  return 1;
}

/* Safe to call twice: __gc and __close. */
static int waiter_close(lua_State *L) {
  waiter *w = luaL_checkudata(L, 1, WAITER_META);
  if (w->map == NULL) return 0;
  pthread_mutex_lock(&helpers_mutex);
  /* A helper still asleep for it finishes its sleep for nobody. */
  if (w->helper) w->helper->waiter = NULL;
  w->helper = NULL;
  pthread_mutex_unlock(&helpers_mutex);
  count_armed(w, 0);
  map_unref(w->map);
  w->map = NULL;
  return 0;
}

/* ---- the main thread asleep on a cell, a watcher on the loop -----------------
 *
 * Handing the sleep to a helper costs a second wake-up (the helper's,
 * then the loop's). When the main thread waits outside any coroutine it
 * sleeps on the cell itself, so that the process changing the cell wakes
 * it directly, and the watcher thread watches the loop's backend
 * descriptor meanwhile: when an event for the loop arrives it bumps the
 * cell's seq (a change every waiter tries again on, harmlessly), which
 * wakes the main thread to turn the loop. Timers need no watcher: the
 * main thread's sleep ends at the loop's next timeout. */
static struct {
  pthread_cond_t wake;
  int started;
  unsigned armed, watched; /* generations: a request, the one watched */
  int sleeping;            /* the main thread sleeps on map's cell */
  int fd;                  /* the loop's backend descriptor */
  cell_map *map;           /* a reference while armed */
} watcher;

static void poke(lmp_sync_cell *c) {
  __atomic_add_fetch(&c->seq, 1, __ATOMIC_SEQ_CST);
  lmp__futex_wake(&c->seq, INT_MAX);
}

static void *watcher_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&helpers_mutex);
  for (;;) {
    struct pollfd pfd;
    while (watcher.armed == watcher.watched) pthread_cond_wait(&watcher.wake, &helpers_mutex);
    watcher.watched = watcher.armed;
    pfd.fd = watcher.fd;
    pfd.events = POLLIN;
    pthread_mutex_unlock(&helpers_mutex);
    /* Only readiness is asked: the loop's own turn takes the events. */
    while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&helpers_mutex);
    if (watcher.sleeping && watcher.map) poke(watcher.map->cell);
  }
  return NULL;
}

/* Starts the watcher once; 0 or -1. Called with the mutex held. */
static int start_watcher(void) {
  pthread_t thread;
  pthread_attr_t attr;
  sigset_t all, old;
  int r;
  if (watcher.started) return 0;
  if (pthread_cond_init(&watcher.wake, NULL) != 0) return -1;
  if (pthread_attr_init(&attr) != 0) return -1;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  r = pthread_create(&thread, &attr, watcher_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (r != 0) return -1;
  watcher.started = 1;
  return 0;
}

static void set_watched_map(cell_map *m) {
  if (m) __atomic_add_fetch(&m->refs, 1, __ATOMIC_SEQ_CST);
  if (watcher.map) map_unref(watcher.map);
  watcher.map = m;
}

/* cell:sleep_beside_loop(seen [, seconds]) -> whether a whole liveness
 * period passed with nothing changed. For the main thread outside
 * coroutines, after a turn of the loop (which registers the descriptors
 * handles started since): sleeps on the cell until it changes, the loop
 * has an event, the loop's next timer is due, or seconds pass. Returns at
 * once when the loop has work waiting. */
static int cell_sleep_beside_loop(lua_State *L) {
  cell_box *box = luaL_checkudata(L, 1, CELL_META);
  uint32_t seen = (uint32_t)luaL_checkinteger(L, 2);
  uv_loop_t *loop = lmp__loop(L);
  int64_t timeout = LIVENESS_NS;
  int alive = uv_loop_alive(loop), watched = 0, quiet;
  if (box->map == NULL) return luaL_error(L, "lmp: the lock's memory is closed");
  if (!lua_isnoneornil(L, 3)) {
    double seconds = luaL_checknumber(L, 3);
    if (seconds * 1e9 < (double)timeout) timeout = seconds > 0 ? (int64_t)(seconds * 1e9) : 0;
  }
  if (alive) {
    int next = uv_backend_timeout(loop);
    if (next == 0) {
      lua_pushboolean(L, 0);
      return 1;
    }
    if (next > 0 && (int64_t)next * 1000000 < timeout) timeout = (int64_t)next * 1000000;
    pthread_mutex_lock(&helpers_mutex);
    if (start_watcher() == 0) {
      set_watched_map(box->map);
      watcher.fd = uv_backend_fd(loop);
      watcher.sleeping = 1;
      watcher.armed++;
      pthread_cond_signal(&watcher.wake);
      watched = 1;
    }
    pthread_mutex_unlock(&helpers_mutex);
    /* Without a watcher the sleep is cut short, so that the loop turns. */
    if (!watched && timeout > 1000000) timeout = 1000000;
  }
  quiet = lmp__sync_sleep(box->map->cell, seen, timeout, 0) && timeout == LIVENESS_NS;
  if (watched) {
    pthread_mutex_lock(&helpers_mutex);
    watcher.sleeping = 0;
    set_watched_map(NULL);
    pthread_mutex_unlock(&helpers_mutex);
  }
  lua_pushboolean(L, quiet);
  return 1;
}

/* ---- Lock and RLock methods, fast -----------------------------------------------
 * lock:acquire() and lock:release() without contention are one call into
 * C: the closure finds the object's cell in sync.lua's table of cells
 * (upvalue 1) and tries; anything else (arguments, contention, an error
 * to raise, a cell not mapped yet) goes to the Lua method (upvalue 2).
 * Upvalue 3: whether the lock is recursive; 4: whether this releases;
 * 5: the cells' metatable. */
static int lock_method_done(lua_State *L, int status, lua_KContext context) {
  (void)status;
  (void)context;
  return lua_gettop(L);
}

static int lock_method(lua_State *L) {
  int recursive = lua_toboolean(L, lua_upvalueindex(3));
  int releasing = lua_toboolean(L, lua_upvalueindex(4));
  if (lua_gettop(L) == 1 && lua_istable(L, 1)) {
    cell_box *box;
    lua_pushvalue(L, 1);
    if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TUSERDATA && lua_getmetatable(L, -1) &&
        lua_rawequal(L, -1, lua_upvalueindex(5)) &&
        (box = lua_touserdata(L, -2))->map != NULL) {
      if (releasing) {
        if (lmp__lock_release(box->map->cell, current_pid(), recursive) == 0) return 0;
      } else if (lmp__lock_try(box->map->cell, current_pid(), recursive, 0) != 0) {
        lua_pushboolean(L, 1);
        return 1;
      }
    }
    lua_settop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  /* With a continuation, so that a wait inside lmp.spawn can yield. */
  lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, lock_method_done);
  return lua_gettop(L);
}

/* core.lock_method(cells, slow, recursive, releasing) -> the method */
static int core_lock_method(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 4);
  lua_pushboolean(L, lua_toboolean(L, 3));
  lua_replace(L, 3);
  lua_pushboolean(L, lua_toboolean(L, 4));
  lua_replace(L, 4);
  luaL_getmetatable(L, CELL_META);
  lua_pushcclosure(L, lock_method, 5);
  return 1;
}

static const luaL_Reg cell_methods[] = {
    {"seq", cell_seq},
    {"sleep", cell_sleep},
    {"sleep_beside_loop", cell_sleep_beside_loop},
    {"waiter", cell_waiter},
    {"lock_try", cell_lock_try},
    {"lock_release", cell_lock_release},
    {"owner", cell_owner},
    {"set_semaphore", cell_set_semaphore},
    {"semaphore_try", cell_semaphore_try},
    {"semaphore_release", cell_semaphore_release},
    {"value", cell_value},
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

static const luaL_Reg waiter_methods[] = {
    {"arm", waiter_arm}, {"quiet", waiter_quiet}, {"close", waiter_close}, {NULL, NULL}};

static const luaL_Reg sync_functions[] = {
    {"sync_cell", core_sync_cell}, {"lock_method", core_lock_method}, {NULL, NULL}};

static void new_meta(lua_State *L, const char *name, const luaL_Reg *methods,
                     lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    if (methods) {
      lua_newtable(L);
      lua_pushvalue(L, -2);
      luaL_setfuncs(L, methods, 1);
      lua_setfield(L, -2, "__index");
    }
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pushstring(L, "a lock's mapping belongs to its process: send the lock");
    lua_setfield(L, -2, "__lmp_nosend");
  }
  lua_pop(L, 1);
}

void lmp__open_sync(lua_State *L) {
  if (!pid_kept && pthread_atfork(NULL, NULL, forget_pid) == 0) pid_kept = 1;
  new_meta(L, CELL_META, cell_methods, cell_close);
  new_meta(L, WAITER_META, waiter_methods, waiter_close);
  new_meta(L, WAKER_META, NULL, waker_gc);
  luaL_setfuncs(L, sync_functions, 0);
  /* The methods, for the Lua side to call without looking them up. */
  luaL_getmetatable(L, CELL_META);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "sync_cell_methods");
  lua_pop(L, 1);
}
