/* The event loop lmp runs on and the one protected path by which libuv
 * callbacks call into Lua (the timers are in timer.c). */
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "lmp.h"
#include "loop.h"

#define LOOP_STATE_META "lmp.LoopState"

static const char loop_state_key = 'l';
static const char host_loop_key = 'h';
static const char reporter_key = 'e';
static const char worker_exe_key = 'w';

typedef struct loop_state {
  uv_loop_t *loop;
  int running; /* inside uv_run: a nested run would break libuv */
  int ring_turns; /* blocking turns in a row served by the rings alone */
  /* Whether the next blocking turn watches before it sleeps (see
   * watch_for_answer), the watches in a row that ran out of time, and how
   * many watches ran and came too late. */
  int watch_pays, watch_misses;
  uint64_t watches, watches_missed;
  lua_State *L; /* the main thread, where callbacks run */
  /* Delivers queued callbacks when someone else turns the loop (luv's
   * uv.run(), a host's uv_run); unreferenced, so it keeps nothing alive. */
  uv_check_t drainer;
} loop_state;

static const char drain_key = 'd';

void lmp_set_loop(lua_State *L, uv_loop_t *loop) {
  lua_pushlightuserdata(L, loop);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &host_loop_key);
}

static loop_state *get_state(lua_State *L) {
  loop_state *state;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_state_key);
  state = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return state;
}

uv_loop_t *lmp_get_loop(lua_State *L) {
  loop_state *state = get_state(L);
  return state ? state->loop : NULL;
}

void lmp_set_worker_executable(lua_State *L, const char *path) {
  lua_pushstring(L, path);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &worker_exe_key);
}

lua_State *lmp__main_thread(lua_State *L) {
  lua_State *main;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  return main;
}

/* luv runs on a loop of its own; when the script loaded luv, lmp joins
 * that loop so that one uv.run() or one lmp.run() drives both. luv keeps
 * its loop in the `_loop` field of its module table (a userdata that is
 * the uv_loop_t itself), or, when a host gave it one, as the first field
 * of its registry context. */
static uv_loop_t *luv_loop_of(lua_State *L) {
  uv_loop_t *loop = NULL;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "luv") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "_loop") == LUA_TUSERDATA) {
      loop = lua_touserdata(L, -1);
    } else if (lua_getfield(L, LUA_REGISTRYINDEX, "luv_context") == LUA_TUSERDATA) {
      loop = *(uv_loop_t **)lua_touserdata(L, -1);
      lua_pop(L, 1);
    } else {
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return loop;
}

static void on_check(uv_check_t *handle) {
  loop_state *state = handle->data;
  if (state->running || state->L == NULL) return;
  if (lua_rawgetp(state->L, LUA_REGISTRYINDEX, &drain_key) != LUA_TFUNCTION) {
    lua_pop(state->L, 1);
    return;
  }
  /* We are inside someone else's uv_run: a blocking lmp call made by a
   * callback must raise, not run the loop again inside it. */
  state->running = 1;
  lmp__call_protected(state->L, 0);
  state->running = 0;
}

/* Process-wide state the loop consults. It lives here, the lowest layer
 * that needs it; the layers above set it. */
static int forked_worker;
/* A forked process's loop of its own (core.own_loop), or NULL. */
static uv_loop_t *own_loop;
static int (*receiving_probe)(void);
static void (*at_close)(void);
static int (*rings_probe)(void);
static int (*rings_drain)(void);
static void (*rings_awake)(int watching);

int lmp__forked_worker(void) { return forked_worker; }
int lmp__parents_handle(const uv_handle_t *handle) {
  return forked_worker && (own_loop == NULL || handle->loop != own_loop);
}
void lmp__become_forked_worker(void) { forked_worker = 1; }
int lmp__receiving(void) { return receiving_probe ? receiving_probe() : 0; }
void lmp__loop_watch_receiving(int (*probe)(void)) { receiving_probe = probe; }
void lmp__loop_at_close(void (*hook)(void)) { at_close = hook; }
void lmp__loop_watch_rings(int (*probe)(void), int (*drain)(void), void (*awake)(int watching)) {
  rings_probe = probe;
  rings_drain = drain;
  rings_awake = awake;
}

/* Runs when the lua_State closes, after every object made later has been
 * finalized: their handles are closing, so a few turns free them. It is
 * made when lmp first needs the loop, after luv if luv is used, so it runs
 * before luv closes the loop. */
static int loop_state_gc(lua_State *L) {
  loop_state *state = luaL_checkudata(L, 1, LOOP_STATE_META);
  int i;
  if (state->loop == NULL || state->running) return 0;
  if (at_close) at_close();
  uv_close((uv_handle_t *)&state->drainer, NULL);
  state->L = NULL;
  for (i = 0; i < 4; i++) uv_run(state->loop, UV_RUN_NOWAIT);
  state->loop = NULL;
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_state_key);
  return 0;
}

/* The loop is chosen when lmp first needs it: the host's, luv's, or
 * libuv's default loop. */
uv_loop_t *lmp__loop(lua_State *L) {
  loop_state *state;
  uv_loop_t *loop;
  /* A forked worker's loop is a copy of its parent's, whose descriptors
   * it has closed: nothing here can run on it. */
  if (lmp__forked_worker() && own_loop == NULL)
    luaL_error(L, "lmp: pools, timers and lmp.sleep are not available in a worker "
                  "started by fork; use start_method = 'spawn' for tasks that need them");
  state = get_state(L);
  if (state) return state->loop;
  if (own_loop != NULL) {
    loop = own_loop;
    lua_pushnil(L);
  } else if (lua_rawgetp(L, LUA_REGISTRYINDEX, &host_loop_key) == LUA_TLIGHTUSERDATA)
    loop = lua_touserdata(L, -1);
  else if ((loop = luv_loop_of(L)) == NULL)
    loop = uv_default_loop();
  lua_pop(L, 1);
  if (loop == NULL) luaL_error(L, "lmp: cannot create the event loop");
  state = lua_newuserdatauv(L, sizeof *state, 0);
  memset(state, 0, sizeof *state);
  state->watch_pays = 1;
  luaL_setmetatable(L, LOOP_STATE_META);
  if (uv_check_init(loop, &state->drainer) != 0) luaL_error(L, "lmp: cannot use the event loop");
  /* From here the state owns a handle: registered before anything else can
   * fail, so that its finalizer closes it. */
  state->loop = loop;
  state->L = lmp__main_thread(L);
  state->drainer.data = state;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_state_key);
  if (uv_check_start(&state->drainer, on_check) != 0) luaL_error(L, "lmp: cannot use the event loop");
  uv_unref((uv_handle_t *)&state->drainer);
  /* Should the script load luv later, lmp's loop joins luv's then. */
  if (loop != luv_loop_of(L) && own_loop == NULL) {
    lmp__names_on_luv_loaded(lmp__loop_luv_loaded);
    lmp__names_watch_loaded(L);
  }
  return loop;
}

/* ---- lmp's loop inside luv's ---------------------------------------------
 *
 * A script that made a pool before it loaded luv has two loops: lmp's and
 * the one luv made for itself, which is all uv.run() turns. Handles cannot
 * move between loops, so lmp's loop is embedded in luv's, as uv_backend_fd
 * allows: a poll handle on lmp's backend descriptor (readable whenever one
 * of lmp's descriptors has an event) and a timer for lmp's next timeout
 * turn lmp's loop without waiting, and so does a prepare handle before luv's
 * loop waits (which also makes lmp's loop watch descriptors it was asked
 * to watch since its last turn). Queued callbacks are delivered by lmp's
 * drainer at the end of each such turn.
 *
 * The poll handle and the timer keep luv's loop alive only while lmp has
 * callbacks due (core.embed_busy, told by the Lua layer), so uv.run()
 * still returns once both sides are idle. The box's finalizer closes the
 * handles; it is made after luv's loop, so it runs before luv closes that
 * loop (which would close foreign handles as if they were luv's). */
#define EMBED_META "lmp.LoopEmbed"
static const char embed_key = 'b';

typedef struct embed {
  uv_poll_t poll;
  uv_timer_t timer;
  uv_prepare_t prepare;
  loop_state *state; /* lmp's: outlives the box, finalized after it */
  int busy;
  int driving; /* a blocking lmp call is turning luv's loop */
  int turning;
  int initialized;  /* bits: POLL_READY, TIMER_READY, PREPARE_READY */
  int open_handles; /* freed when the last one is closed */
} embed;

enum { POLL_READY = 1, TIMER_READY = 2, PREPARE_READY = 4 };

static void embed_turn(embed *e) {
  if ((e->state->running && !e->driving) || e->turning || e->state->L == NULL) return;
  e->turning = 1;
  uv_run(e->state->loop, UV_RUN_NOWAIT);
  e->turning = 0;
}

/* When a blocking lmp call turns luv's loop (e->driving), a turn of lmp's
 * loop that had work to do may have made the call's answer ready: luv's
 * loop must then return at the end of this iteration, not wait in its
 * poll phase, so that the caller looks. */
static void embed_turn_and_yield(embed *e, int had_work) {
  embed_turn(e);
  if (e->driving && had_work) uv_stop(e->poll.loop);
}

static int inner_has_work(embed *e) {
  struct pollfd pfd;
  pfd.fd = uv_backend_fd(e->state->loop);
  pfd.events = POLLIN;
  return uv_backend_timeout(e->state->loop) == 0 || poll(&pfd, 1, 0) > 0;
}

static void on_embed_timer(uv_timer_t *handle) {
  embed_turn_and_yield(handle->data, 1);
}

/* Keeps luv's loop alive for lmp's sake only while lmp has callbacks due
 * and something that can deliver them, and wakes it when lmp's next timer
 * is due. */
static void embed_arm(embed *e) {
  uv_loop_t *inner = e->state->loop;
  int alive = uv_loop_alive(inner);
  void (*set)(uv_handle_t *) = (e->busy || e->driving) && alive ? uv_ref : uv_unref;
  int timeout = alive ? uv_backend_timeout(inner) : -1;
  set((uv_handle_t *)&e->poll);
  set((uv_handle_t *)&e->timer);
  if (timeout < 0 || uv_timer_start(&e->timer, on_embed_timer, (uint64_t)timeout, 0) != 0)
    uv_timer_stop(&e->timer);
}

static void on_embed_poll(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  embed_turn_and_yield(handle->data, 1);
  embed_arm(handle->data);
}

static void on_embed_prepare(uv_prepare_t *handle) {
  embed *e = handle->data;
  embed_turn_and_yield(e, e->driving && inner_has_work(e));
  embed_arm(e);
}

static void embed_handle_closed(uv_handle_t *handle) {
  embed *e = handle->data;
  if (--e->open_handles == 0) free(e);
}

static embed **check_embed(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, EMBED_META);
}

static int embed_gc(lua_State *L) {
  embed **box = check_embed(L, 1);
  embed *e = *box;
  if (e == NULL) return 0;
  *box = NULL;
  e->open_handles = 0;
  if (e->initialized & POLL_READY) e->open_handles++;
  if (e->initialized & TIMER_READY) e->open_handles++;
  if (e->initialized & PREPARE_READY) e->open_handles++;
  if (e->open_handles == 0) {
    free(e);
    return 0;
  }
  if (e->initialized & POLL_READY) uv_close((uv_handle_t *)&e->poll, embed_handle_closed);
  if (e->initialized & TIMER_READY) uv_close((uv_handle_t *)&e->timer, embed_handle_closed);
  if (e->initialized & PREPARE_READY)
    uv_close((uv_handle_t *)&e->prepare, embed_handle_closed);
  return 0;
}

/* Runs inside require "luv": reports a failure instead of raising. */
static int embed_in_luv(lua_State *L) {
  loop_state *state = get_state(L);
  uv_loop_t *outer = luv_loop_of(L);
  embed **box;
  embed *e;
  int fd, err;
  /* A forked worker's copy of lmp's loop is not usable (see lmp__loop). */
  if (lmp__forked_worker()) return 0;
  if (state == NULL || state->loop == NULL || outer == NULL || outer == state->loop) return 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &embed_key) != LUA_TNIL) return 0;
  fd = uv_backend_fd(state->loop);
  if (fd < 0) return luaL_error(L, "lmp's loop has no backend descriptor to embed");
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, EMBED_META)) {
    lua_pushcfunction(L, embed_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  e = calloc(1, sizeof *e);
  if (e == NULL) return luaL_error(L, "not enough memory");
  e->state = state;
  /* The box owns e from here: its finalizer closes what was initialized. */
  *box = e;
  e->poll.data = e->timer.data = e->prepare.data = e;
  if ((err = uv_poll_init(outer, &e->poll, fd)) != 0)
    return luaL_error(L, "cannot watch lmp's loop: %s", uv_strerror(err));
  e->initialized |= POLL_READY;
  if ((err = uv_timer_init(outer, &e->timer)) != 0)
    return luaL_error(L, "cannot make a timer: %s", uv_strerror(err));
  e->initialized |= TIMER_READY;
  if ((err = uv_prepare_init(outer, &e->prepare)) != 0)
    return luaL_error(L, "cannot make a prepare handle: %s", uv_strerror(err));
  e->initialized |= PREPARE_READY;
  if ((err = uv_poll_start(&e->poll, UV_READABLE, on_embed_poll)) != 0 ||
      (err = uv_prepare_start(&e->prepare, on_embed_prepare)) != 0)
    return luaL_error(L, "cannot watch lmp's loop: %s", uv_strerror(err));
  uv_unref((uv_handle_t *)&e->prepare);
  /* Until the Lua layer says otherwise, callbacks may be due. */
  e->busy = 1;
  embed_arm(e);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &embed_key);
  return 0;
}

void lmp__loop_luv_loaded(lua_State *L) {
  lua_pushcfunction(L, embed_in_luv);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "lmp: cannot join luv's loop: %s\n", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
  }
}

/* The embedding in luv's loop, or NULL. */
static embed *current_embed(lua_State *L) {
  embed **box;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &embed_key);
  box = luaL_testudata(L, -1, EMBED_META);
  lua_pop(L, 1);
  return box ? *box : NULL;
}

/* core.embed_busy(busy): whether lmp has callbacks due, for the embedding
 * in luv's loop (nothing to do when there is none). */
static int core_embed_busy(lua_State *L) {
  embed **box;
  int busy = lua_toboolean(L, 1);
  if (lmp__forked_worker()) return 0; /* the parent's embedding, in a copy */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &embed_key) == LUA_TUSERDATA &&
      (box = luaL_testudata(L, -1, EMBED_META)) != NULL && *box != NULL && (*box)->busy != busy) {
    (*box)->busy = busy;
    /* Becoming busy, keep luv's loop alive at once: lmp's handles may not
     * have been started yet (the next prepare settles it). */
    if (busy) {
      uv_ref((uv_handle_t *)&(*box)->poll);
    } else {
      embed_arm(*box);
    }
  }
  return 0;
}

/* Calls the function below its `nargs` arguments on the stack in protected
 * mode, with a traceback; an error goes to the reporter the Lua layer set
 * (lmp.on_error), or to stderr. Pops the function and arguments. Returns
 * the lua_pcall status. Every call from a libuv callback into Lua goes
 * through here, so a Lua error never unwinds through libuv. */
static int traceback(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "value");
  luaL_traceback(L, L, lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL, 1);
  lua_setfield(L, -2, "traceback");
  return 1;
}

int lmp__call_protected(lua_State *L, int nargs) {
  int base = lua_gettop(L) - nargs, status;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, 0, base);
  if (status != LUA_OK) {
    int report = lua_gettop(L);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &reporter_key) == LUA_TFUNCTION) {
      lua_pushvalue(L, report);
      if (lua_pcall(L, 1, 0, 0) == LUA_OK) goto done;
      fprintf(stderr, "lmp: error reporter failed: %s\n",
              luaL_tolstring(L, -1, NULL));
    } else {
      const char *message, *trace;
      lua_getfield(L, report, "value");
      message = lua_type(L, -1) == LUA_TTABLE ? "(error object)" : luaL_tolstring(L, -1, NULL);
      lua_getfield(L, report, "traceback");
      trace = lua_tostring(L, -1);
      fprintf(stderr, "lmp: error in callback: %s\n%s\n", message, trace ? trace : "");
    }
  done:
    lua_settop(L, base - 1);
    return status;
  }
  lua_settop(L, base - 1);
  return status;
}

/* core.set_drain(fn): what the drainer calls (the Lua queue of callbacks). */
static int core_set_drain(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &drain_key);
  return 0;
}

static int core_set_reporter(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &reporter_key);
  return 0;
}

/* How long a process watches for an answer before it lets its CPU sleep:
 * $LMP_SPIN_US microseconds (default 50; 0 turns it off). Never on a
 * single CPU, where watching would only keep the answer from being made. */
uint64_t lmp__spin_ns(void) {
  static int64_t spin = -1;
  if (spin < 0) {
    const char *env = getenv("LMP_SPIN_US");
    cpu_set_t cpus;
    spin = env && *env ? (int64_t)strtol(env, NULL, 10) * 1000 : 50000;
    if (spin < 0 || (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) < 2))
      spin = 0;
  }
  return (uint64_t)spin;
}

/* Watches fd for input for at most lmp__spin_ns(), yielding the CPU
 * between looks: on many machines waking a sleeping CPU costs more than a
 * whole round trip, and an answer usually follows at once. */
void lmp__spin_until_readable(int fd) {
  struct pollfd pfd;
  uint64_t deadline;
  if (lmp__spin_ns() == 0 || fd < 0) return;
  pfd.fd = fd;
  pfd.events = POLLIN;
  deadline = uv_hrtime() + lmp__spin_ns();
  while (poll(&pfd, 1, 0) == 0 && uv_hrtime() < deadline) sched_yield();
}

/* Whether an answer waits now: in a ring, or on the loop's backend. */
static int answer_ready(struct pollfd *pfd) {
  return (rings_probe && rings_probe()) || poll(pfd, 1, 0) != 0;
}

/* What a blocking turn's watch found (judged after the turn, judge_watch). */
enum { WATCH_NONE, WATCH_READY, WATCH_CAUGHT, WATCH_MISSED, WATCH_SKIPPED };

/* A blocking turn first watches the loop's backend (and the rings, where
 * workers answer in memory) for a short while, so that a quick answer is
 * taken without a sleep and wake-up; not while a message is arriving (its
 * writer needs the CPU). The watch yields the CPU between looks, and on
 * a machine whose CPUs the workers keep busy a yield gives the CPU away
 * for a whole time slice (a millisecond or more), during which the
 * workers, seeing this process awake, do not wake it: an answer then
 * waits for the scheduler, and a worker for its next task. So the watch
 * runs only while it pays: two watches in a row that ran out of time
 * before anything came turn it off (one alone may be a round trip that a
 * loaded machine made slow), and a sleep shorter than the watch would
 * have been turns it on again (watch_pays). Answers that come far apart
 * (a map's chunks of milliseconds) are slept for, quick ones watched. */
static int watch_for_answer(loop_state *state) {
  struct pollfd pfd;
  uint64_t deadline;
  int i;
  if (lmp__receiving() || lmp__spin_ns() == 0) return WATCH_NONE;
  pfd.fd = uv_backend_fd(state->loop);
  pfd.events = POLLIN;
  /* A few plain looks at the rings first: an answer is often there
   * within a microsecond, and they cost no system call. */
  for (i = 0; i < 64; i++)
    if (rings_probe && rings_probe()) return WATCH_READY;
  if (!state->watch_pays) return answer_ready(&pfd) ? WATCH_READY : WATCH_SKIPPED;
  state->watches++;
  deadline = uv_hrtime() + lmp__spin_ns();
  for (;;) {
    if (answer_ready(&pfd)) return uv_hrtime() <= deadline ? WATCH_CAUGHT : WATCH_MISSED;
    if (uv_hrtime() >= deadline) return WATCH_MISSED;
    sched_yield();
  }
}

/* After a blocking turn that started at `started` with a watch that
 * found `outcome`: whether the next one watches. */
static void judge_watch(loop_state *state, int outcome, uint64_t started) {
  if (outcome == WATCH_CAUGHT) {
    state->watch_misses = 0;
  } else if (outcome == WATCH_MISSED) {
    state->watches_missed++;
    if (++state->watch_misses >= 2) state->watch_pays = 0;
  } else if (outcome == WATCH_SKIPPED && uv_hrtime() - started <= lmp__spin_ns()) {
    state->watch_pays = 1;
    state->watch_misses = 0;
  }
}

/* core.own_loop(): in a process forked from one that had lmp's loop (a
 * manager's process started by fork), makes a new loop that this process
 * alone uses from then on. The parent's copy is forgotten, never run nor
 * closed here: its descriptors are the parent's (or closed). Handles made
 * on the new loop are closed by their finalizers as anywhere else
 * (lmp__parents_handle tells them apart). Does nothing elsewhere, or a
 * second time. */
static int core_own_loop(lua_State *L) {
  loop_state *old;
  uv_loop_t *loop;
  int r;
  if (!lmp__forked_worker() || own_loop != NULL) return 0;
  loop = malloc(sizeof *loop);
  if (loop == NULL) return luaL_error(L, "lmp: not enough memory");
  if ((r = uv_loop_init(loop)) != 0) {
    free(loop);
    return luaL_error(L, "lmp: cannot make an event loop: %s", uv_strerror(r));
  }
  old = get_state(L);
  if (old != NULL) old->loop = NULL; /* its finalizer then leaves it alone */
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_state_key);
  /* An embedding in luv's loop (embed_key) stays referenced, so that its
   * finalizer never closes the parent's handles; it is no longer used. */
  own_loop = loop;
  return 0;
}
#define RING_TURNS_MAX 8

/* core.run_once(block): one turn of the loop. Returns whether anything is
 * still active. Refuses to nest, which libuv does not allow. */
static int core_run_once(lua_State *L) {
  loop_state *state;
  embed *e;
  int block = lua_toboolean(L, 1), alive, watch = WATCH_NONE;
  uint64_t started = block ? uv_hrtime() : 0;
  lmp__loop(L);
  state = get_state(L);
  if (state->running) {
    lmp__push_error(L, "in_callback",
                    "a blocking call was made while the event loop is running (inside a "
                    "libuv callback), where waiting would stop the loop it waits on; use "
                    "the _async form with a callback, or run the code in lmp.spawn(fn)");
    return lua_error(L);
  }
  state->running = 1;
  e = own_loop != NULL ? NULL : current_embed(L);
  if (e != NULL) {
    /* Embedded in luv's loop: turning that one turns lmp's too, and
     * luv's timers and sockets keep going while a blocking call waits,
     * as they do when lmp runs on luv's loop itself. */
    uv_loop_t *outer = e->poll.loop;
    e->driving = 1;
    embed_arm(e);
    if (block && rings_awake) rings_awake(1);
    if (block) watch = watch_for_answer(state);
    /* lmp's prepare handle runs only when lmp's loop turns, after luv's
     * has slept: what the rings hold is taken now instead of after that
     * sleep, and they are told to ring the wake-up before it. */
    if (block && rings_probe && rings_probe() && rings_drain()) block = 0;
    if (rings_awake) rings_awake(0);
    alive = uv_run(outer, block ? UV_RUN_ONCE : UV_RUN_NOWAIT);
    embed_turn(e);
    e->driving = 0;
    embed_arm(e);
    alive = alive || uv_loop_alive(state->loop);
  } else {
    if (block && rings_awake) rings_awake(1);
    if (block) watch = watch_for_answer(state);
    /* A worker's answer that waits in its ring is taken without a turn
     * of libuv (whose poll is a system call even when it does not
     * sleep); but only a few times in a row, lest a busy ring starve
     * the sockets and timers. */
    if (block && rings_probe && state->ring_turns < RING_TURNS_MAX && rings_probe() &&
        rings_drain()) {
      state->ring_turns++;
      alive = 1;
    } else {
      state->ring_turns = 0;
      alive = uv_run(state->loop, block ? UV_RUN_ONCE : UV_RUN_NOWAIT);
    }
    /* Not watching any more: the rings ring the wake-up again. */
    if (rings_awake) rings_awake(0);
  }
  if (block) judge_watch(state, watch, started);
  state->running = 0;
  lua_pushboolean(L, alive);
  return 1;
}

/* core.watch_counts() -> the blocking turns of this process's loop that
 * watched for an answer before sleeping, and those of them that ran out
 * of time (what turns the watch off until a sleep is short again). */
static int core_watch_counts(lua_State *L) {
  loop_state *state;
  lmp__loop(L);
  state = get_state(L);
  lua_pushinteger(L, (lua_Integer)state->watches);
  lua_pushinteger(L, (lua_Integer)state->watches_missed);
  return 2;
}

/* core.loop_is_luv() -> whether lmp runs on luv's loop. */
static int core_loop_is_luv(lua_State *L) {
  uv_loop_t *loop = lmp__loop(L);
  lua_pushboolean(L, loop != NULL && loop == luv_loop_of(L));
  return 1;
}

static int core_hrtime(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

void lmp__push_worker_executable(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &worker_exe_key);
}

static const luaL_Reg loop_functions[] = {
    {"run_once", core_run_once},
    {"watch_counts", core_watch_counts},
    {"own_loop", core_own_loop},
    {"hrtime", core_hrtime},
    {"set_reporter", core_set_reporter},
    {"set_drain", core_set_drain},
    {"loop_is_luv", core_loop_is_luv},
    {"embed_busy", core_embed_busy},
    {NULL, NULL}};

void lmp__open_loop(lua_State *L) {
  if (luaL_newmetatable(L, LOOP_STATE_META)) {
    lua_pushcfunction(L, loop_state_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, loop_functions, 0);
}
