/* The worker layer: being a worker (worker.c), a map's chunk of numbers
 * run without tables (map_numbers.c) and Ctrl-C (interrupt.c).
 * Internal; uses only the layers below it. */
#ifndef LMP_WORKER_H
#define LMP_WORKER_H

#include "transport.h"

/* The argument that tells an lmp-worker (or a host serving as one) it is
 * a worker: argv[1], followed by its parent's pid. */
#define LMP_WORKER_FLAG "--lmp-worker"

/* argv[3] of a worker that is to be the forkserver instead. */
#define LMP_FORKSERVER_FLAG "forkserver"

/* worker.c: the set-up every worker does first, given its parent's pid:
 * dies with the parent, ignores Ctrl-C, guards SIGPIPE, blocking channel on
 * fd 3. Returns 0, or -1 if this process cannot be that worker. */
int lmp__become_worker(long parent);
/* worker.c: runs require("lmp.worker").main() in L; the exit status. */
int lmp__run_worker(lua_State *L);
/* worker.c: serves as the forkserver on fd 3 (after lmp__become_worker);
 * returns 0 in the server once its socket closed, and in each worker it
 * forked, that worker's exit status. */
int lmp__serve_forks(lua_State *L, long parent);

/* Each binding file adds its functions to the lmp.core table on top. */
void lmp__open_worker(lua_State *L);
void lmp__open_map_numbers(lua_State *L);
void lmp__open_interrupt(lua_State *L);

#endif
