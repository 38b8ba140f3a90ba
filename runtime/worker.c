/* Being a worker: the set-up every worker does first, running
 * lmp.worker's main, and core.find_worker, which tells a pool which
 * executable to start. lmp_worker_main (embed.c) uses the first two. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <lualib.h>

#include "channel.h"
#include "worker.h"

static int run_worker(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.worker");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_call(L, 0, 1);
  return 1;
}

/* What every worker does first, however it was started. */
int lmp__become_worker(long parent) {
  int flags;
  /* A worker must not outlive its parent: the kernel kills it when the
   * parent dies, and the check closes the race with a parent that died
   * before prctl ran. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    fprintf(stderr, "lmp worker: cannot tie its life to its parent's: %s\n", strerror(errno));
    return -1;
  }
  if ((long)getppid() != parent) return -1;
  /* Ctrl-C reaches the whole process group; the parent decides what it
   * means, so that one message is printed, not one per worker. */
  if (signal(SIGINT, SIG_IGN) == SIG_ERR || lmp__guard_sigpipe() != 0) {
    fprintf(stderr, "lmp worker: cannot set its signals: %s\n", strerror(errno));
    return -1;
  }
  flags = fcntl(LMP_CHANNEL_FD, F_GETFL);
  if (flags < 0) {
    fprintf(stderr, "lmp worker: no channel on fd %d\n", LMP_CHANNEL_FD);
    return -1;
  }
  /* The channel is read with blocking reads, and no program the task runs
   * may inherit it. */
  if (fcntl(LMP_CHANNEL_FD, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
      fcntl(LMP_CHANNEL_FD, F_SETFD, FD_CLOEXEC) != 0) {
    fprintf(stderr, "lmp worker: cannot set up its channel: %s\n", strerror(errno));
    return -1;
  }
  lmp__widen_socket(LMP_CHANNEL_FD);
  return 0;
}

/* Runs require("lmp.worker").main() in L; returns the exit status. */
int lmp__run_worker(lua_State *L) {
  int status;
  lua_pushcfunction(L, run_worker);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "lmp worker %ld: %s\n", (long)getpid(), luaL_tolstring(L, -1, NULL));
    status = 1;
  } else {
    status = (int)lua_tointeger(L, -1);
  }
  return status;
}

static int executable(const char *path) {
  return access(path, X_OK) == 0;
}

/* core.find_worker() -> path of the program a new worker runs, the one
 * place that decides it: $LMP_WORKER (a debugger or a valgrind wrapper);
 * then what the host or the runner set (lmp_set_worker_executable); then
 * the lmp-worker beside this module in a build tree or an installed tree;
 * then "lmp-worker" on PATH. */
static int core_find_worker(lua_State *L) {
  const char *env = getenv("LMP_WORKER");
  Dl_info info;
  char buf[PATH_MAX + 32], dir[PATH_MAX], resolved[PATH_MAX];
  static const char *relative[] = {"/../bin/lmp-worker", "/../../../../bin/lmp-worker",
                                   NULL};
  int i;
  if (env && *env) {
    lua_pushstring(L, env);
    return 1;
  }
  lmp__push_worker_executable(L);
  if (lua_type(L, -1) == LUA_TSTRING) return 1;
  lua_pop(L, 1);
  /* This function's own address names the file lmp was loaded from. */
  if (dladdr((void *)core_find_worker, &info) && info.dli_fname) {
    const char *module_dir;
    snprintf(dir, sizeof dir, "%s", info.dli_fname);
    module_dir = dirname(dir);
    for (i = 0; relative[i]; i++) {
      snprintf(buf, sizeof buf, "%s%s", module_dir, relative[i]);
      if (executable(buf) && realpath(buf, resolved)) {
        lua_pushstring(L, resolved);
        return 1;
      }
    }
  }
  lua_pushliteral(L, "lmp-worker");
  return 1;
}

/* core.new_process_group() -> true, or nil and a message: this worker
 * leads a process group of its own, so that what its tasks start can be
 * killed with it (a pool's kill_orphans). Called before any task runs. */
static int core_new_process_group(lua_State *L) {
  if (setpgid(0, 0) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg worker_functions[] = {{"find_worker", core_find_worker},
                                            {"new_process_group", core_new_process_group},
                                            {NULL, NULL}};

/* A worker made by fork: the set-up, then lmp.worker's main, in the Lua
 * state it inherited. */
static int run_forked(lua_State *L, long parent) {
  if (lmp__become_worker(parent) != 0) return 1;
  return lmp__run_worker(L);
}

void lmp__open_worker(lua_State *L) {
  lmp__on_forked_worker(run_forked);
  luaL_setfuncs(L, worker_functions, 0);
  lua_pushliteral(L, LMP_WORKER_FLAG);
  lua_setfield(L, -2, "worker_flag");
}
