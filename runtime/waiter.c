/* How the main process waits on a cell without stopping its event loop.
 * Outside coroutines the main thread sleeps on the cell itself, woken
 * directly by the process that changes it, while a watcher thread
 * watches the loop (cell:sleep_beside_loop). A coroutine of lmp.spawn
 * must yield instead, and lmp's loop inside luv's is turned by luv: there
 * a waiter (cell:waiter()) hands the sleep to a helper thread, which
 * wakes the loop with a uv_async once the cell changes; the Lua side then
 * tries again on the main thread. Threads are kept for the next wait. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include <uv.h>

#include "sync.h"

#define WAITER_META "lmp.SyncWaiter"
#define WAKER_META "lmp.SyncWaker"

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
    lmp__map_unref(m);
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
int lmp__cell_waiter(lua_State *L) {
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
  lmp__map_unref(w->map);
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
  if (watcher.map) lmp__map_unref(watcher.map);
  watcher.map = m;
}

/* cell:sleep_beside_loop(seen [, seconds]) -> whether a whole liveness
 * period passed with nothing changed. For the main thread outside
 * coroutines, after a turn of the loop (which registers the descriptors
 * handles started since): sleeps on the cell until it changes, the loop
 * has an event, the loop's next timer is due, or seconds pass. Returns at
 * once when the loop has work waiting. */
int lmp__cell_sleep_beside_loop(lua_State *L) {
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

static const luaL_Reg waiter_methods[] = {
    {"arm", waiter_arm}, {"quiet", waiter_quiet}, {"close", waiter_close}, {NULL, NULL}};

void lmp__open_waiter(lua_State *L) {
  lmp__sync_meta(L, WAITER_META, waiter_methods, waiter_close);
  lmp__sync_meta(L, WAKER_META, NULL, waker_gc);
}
