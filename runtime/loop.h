/* The loop layer: the event loop lmp runs on (the host's, luv's or
 * libuv's), protected calls into Lua from its callbacks, timers, and the
 * process-wide state the loop consults. Internal; uses only the layers
 * below it. */
#ifndef LMP_LOOP_H
#define LMP_LOOP_H

#include "value.h"

/* The loop lmp runs on in L, chosen at its first use: the host's, luv's,
 * or libuv's default loop. */
uv_loop_t *lmp__loop(lua_State *L);
/* Called when the script loads luv: if lmp already runs on another loop,
 * that loop is embedded in luv's, so that uv.run() serves both. Never
 * raises (it runs inside require); a failure is printed on stderr. */
void lmp__loop_luv_loaded(lua_State *L);
/* The main thread of L's state: libuv callbacks call Lua there. */
lua_State *lmp__main_thread(lua_State *L);
/* How long to watch for an answer before sleeping, in ns ($LMP_SPIN_US). */
uint64_t lmp__spin_ns(void);
/* Watches fd for input for at most that long before a blocking wait. */
void lmp__spin_until_readable(int fd);
/* Calls the function below `nargs` arguments in protected mode; an error
 * goes to the reporter (lmp.on_error) or stderr. Pops them all. */
int lmp__call_protected(lua_State *L, int nargs);

/* Whether this process is a worker made by fork (the "fork" start
 * method): what it inherited from its parent (worker handles, the event
 * loop, connections) is the parent's, not to be touched here. Set once,
 * in the child, by lmp__become_forked_worker. */
int lmp__forked_worker(void);
void lmp__become_forked_worker(void);
/* Whether handle is a copy of the parent's in a forked worker (not one
 * made on the worker's own loop, core.own_loop): its finalizer must leave
 * it alone. */
int lmp__parents_handle(const uv_handle_t *handle);
/* Whether part of a message from a worker has arrived and the rest is on
 * its way (then watching for it would only slow its writer): asks the
 * probe the worker-process layer registers, if any. */
int lmp__receiving(void);
void lmp__loop_watch_receiving(int (*probe)(void));
/* Whether a frame waits in a worker's shared-memory ring, the delivery of
 * what waits (1 when something was delivered), and the news that the
 * process starts (1) or stops (0) watching its rings: what the
 * worker-process layer registers once a worker has a ring. A blocking
 * turn (on lmp's own loop) watches the probe while it spins, saying so
 * around it, and may deliver without turning libuv. */
void lmp__loop_watch_rings(int (*probe)(void), int (*drain)(void), void (*awake)(int watching));
/* A function run when the lua_State's loop state closes, before its last
 * turns (the Ctrl-C watcher registers its close here). One slot. */
void lmp__loop_at_close(void (*hook)(void));

/* Pushes the worker executable the host set (lmp_set_worker_executable),
 * or nil. */
void lmp__push_worker_executable(lua_State *L);

/* Adds the loop's functions to the lmp.core table on top. */
void lmp__open_loop(lua_State *L);
/* Adds core.timer (timer.c) to the lmp.core table on top. */
void lmp__open_timer(lua_State *L);
/* Adds core.watch_stop_signals (stop_signals.c) to the lmp.core table on
 * top. */
void lmp__open_stop_signals(lua_State *L);

#endif
