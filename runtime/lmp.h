/* lmp: multiprocessing for Lua. The embedding API.
 *
 * A host program that runs Lua 5.4 links liblmp.a and uses these calls:
 *
 *   cc host.c $(pkg-config --cflags --libs lmp)
 *
 * (liblmp.a needs Lua 5.4, libuv, -lm and -ldl, which lmp.pc names). This
 * header includes uv.h, which under strict -std=c99 needs
 * _POSIX_C_SOURCE 200809L defined before it. Typical host (a whole one is
 * examples/embed/host.c):
 *
 *   int main(int argc, char **argv) {
 *     int status = lmp_worker_main(argc, argv, register_my_functions, NULL);
 *     if (status >= 0) return status;         // this process was a worker
 *     lua_State *L = luaL_newstate();
 *     lmp_use_huge_pages(L);                  // optional: faster big values
 *     luaL_openlibs(L);
 *     register_my_functions(L, NULL);
 *     lmp_set_worker_executable(L, "/proc/self/exe");
 *     luaL_requiref(L, "lmp", luaopen_lmp, 1);
 *     lua_pop(L, 1);
 *     ... run scripts; call lmp_run(L) to deliver pending callbacks ...
 *     lua_close(L);                           // stops every worker
 *   }
 *
 * One process hosts one lmp. Some of its state is per process, not per
 * lua_State: being a worker, Ctrl-C handling, the SIGPIPE shield, the
 * resource tracker and the Queue feeders. A host may open lmp in one
 * lua_State at a time; opening it in a second state while the first is
 * open is not supported.
 *
 * Errors: functions returning int return 0 (or a count) on success and a
 * negative errno-style code on failure unless said otherwise; functions
 * that take a lua_State may raise Lua errors only where documented.
 */
#ifndef LMP_H
#define LMP_H

#include <lua.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LMP_VERSION "0.1.0"

/* Opens the whole module in L: installs package.preload entries for "lmp",
 * "lmp.core" and lmp's Lua modules (their code is compiled into the
 * library), then requires "lmp" and returns 1 with the module table pushed.
 * Raises a Lua error if L lacks the standard libraries. */
int luaopen_lmp(lua_State *L);

/* Opens only the C core (the table "lmp.core"); used by require from a
 * plain lua5.4. Returns 1 with the table pushed. */
int luaopen_lmp_core(lua_State *L);

/* Makes lmp in L use `loop` instead of libuv's default loop (or luv's):
 * lmp's handles (worker pipes and processes, timers) live on it. Call it
 * before the module is opened in L; once lmp has picked its loop (when it
 * first needs one), later calls are ignored. The host keeps ownership: lmp
 * never closes the loop, which must outlive L.
 *
 * lmp's blocking calls and lmp_run(L) turn the loop, so the host's own
 * handles on it run meanwhile. When the host turns it (uv_run), lmp's Lua
 * callbacks run right after the events that queued them, on L's main
 * thread. lua_close(L) closes every handle lmp made on the loop and turns
 * it until they are freed, so that uv_loop_close(loop) succeeds once the
 * host has closed its own handles. */
void lmp_set_loop(lua_State *L, uv_loop_t *loop);

/* Returns the loop lmp uses in L, or NULL while lmp has not needed one yet
 * (it picks it when it first starts a pool or a timer). */
uv_loop_t *lmp_get_loop(lua_State *L);

/* Sets the executable that pools in L start as workers. The string is
 * copied. The executable must call lmp_worker_main at the top of main (the
 * host itself: pass "/proc/self/exe", or better what readlink() gives for
 * it, which stays right under valgrind and other launchers). $LMP_WORKER,
 * when set, overrides it. Without either, lmp uses the lmp-worker found
 * relative to the code of lmp (for core.so in
 * <prefix>/lib/lua/5.4/lmp, <prefix>/bin/lmp-worker; for a host that links
 * liblmp.a, relative to the host's executable, which is rarely meant),
 * then "lmp-worker" on PATH. */
void lmp_set_worker_executable(lua_State *L, const char *path);

/* Called by a worker before it runs any task, with the worker's fresh
 * lua_State (standard libraries open, lmp's modules in package.preload so
 * that require "lmp" works): register C functions here so that tasks can
 * use them. */
typedef void (*lmp_setup_fn)(lua_State *L, void *ud);

/* Turns this process into a worker if it was started as one (argv holds
 * lmp's worker flag) and returns its exit status when the parent is done
 * with it. Returns -1 at once, doing nothing, for an ordinary start.
 * `setup` may be NULL. */
int lmp_worker_main(int argc, char **argv, lmp_setup_fn setup, void *ud);

/* Gives L, made by luaL_newstate, lauxlib's allocator (malloc) for blocks
 * under 4 MB, and lmp's for bigger ones: mapped on transparent huge pages
 * (one page fault per 2 MB instead of 512), and the last two freed kept
 * for reuse (marked MADV_FREE, so the kernel may still take them back):
 * a 100 MB string from a worker then arrives at ~2.8 GB/s instead of
 * ~0.6. Call it right after luaL_newstate, before L has made any block
 * that big; not for states with an allocator of their own. The runner
 * and lmp-worker do this. */
void lmp_use_huge_pages(lua_State *L);

/* Turns the loop until every pending lmp callback has fired (lmp.run()).
 * Pools stay open; lua_close(L) stops them. Must not be called from inside
 * a libuv callback (libuv forbids a nested uv_run). Returns 0, or -1 with
 * the error value pushed on L if a Lua error escaped. */
int lmp_run(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
