/* lmp: multiprocessing for Lua. The embedding API.
 *
 * A host program that runs Lua 5.4 links liblmp.a (pkg-config --libs lmp)
 * and uses these calls. Typical host:
 *
 *   int main(int argc, char **argv) {
 *     int status = lmp_worker_main(argc, argv, register_my_functions, NULL);
 *     if (status >= 0) return status;         // this process was a worker
 *     lua_State *L = luaL_newstate();
 *     luaL_openlibs(L);
 *     register_my_functions(L, NULL);
 *     lmp_set_worker_executable(L, "/proc/self/exe");
 *     luaL_requiref(L, "lmp", luaopen_lmp, 0);
 *     ... run scripts; call lmp_run(L) to deliver pending callbacks ...
 *     lua_close(L);                           // stops every worker
 *   }
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

/* Makes lmp in L use `loop` instead of libuv's default loop, so that pool
 * events are delivered when the host runs its own loop. Call before the
 * module is opened in L. lmp never closes a loop it did not create; the
 * loop must outlive L. */
void lmp_set_loop(lua_State *L, uv_loop_t *loop);

/* Returns the loop lmp uses in L (after the module was opened), or NULL. */
uv_loop_t *lmp_get_loop(lua_State *L);

/* Sets the executable that pools in L start as workers. The string is
 * copied. The executable must call lmp_worker_main at the top of main (the
 * host itself: pass "/proc/self/exe"). Without it lmp uses $LMP_WORKER,
 * then the lmp-worker installed beside the module. */
void lmp_set_worker_executable(lua_State *L, const char *path);

/* Called by a worker before it runs any task, with the worker's fresh
 * lua_State (standard libraries and lmp open): register C functions here
 * so that tasks can use them. */
typedef void (*lmp_setup_fn)(lua_State *L, void *ud);

/* Turns this process into a worker if it was started as one (argv holds
 * lmp's worker flag) and returns its exit status when the parent is done
 * with it. Returns -1 at once, doing nothing, for an ordinary start.
 * `setup` may be NULL. */
int lmp_worker_main(int argc, char **argv, lmp_setup_fn setup, void *ud);

/* Turns the loop until every pending lmp callback has fired (lmp.run()).
 * Returns 0, or -1 with an error message pushed on L if a Lua error
 * escaped. */
int lmp_run(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
