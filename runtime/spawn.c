/* Starting a worker process: the "spawn" start method (an executable run
 * with vfork and exec, a channel on its fd 3, so its stdin, stdout and
 * stderr stay the terminal's) and the "fork" one (a copy of this process,
 * its channel moved to fd 3). Either way the result is a worker process
 * handle (process.c), whose exit is watched by its pidfd (or SIGCHLD).
 * Also core.kill, core.cpu_count and core.getpid. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "channel.h"
#include "process.h"

/* In the child of core.spawn, between vfork and exec: only async-signal-
 * safe calls. The channel goes to fd 3; every other descriptor from 4 up
 * to `limit` (the soft RLIMIT_NOFILE: valgrind keeps its own above it) is
 * closed, so that the worker inherits nothing the script opened (an
 * io.popen pipe's reader would not see end of file while workers live).
 * Signals get their default actions and are unblocked, as a new program
 * expects. */
static LMP_NORETURN void exec_worker(const char *file, char **args, int channel, long limit) {
  int base = LMP_CHANNEL_FD + 1, i, sig;
  sigset_t none;
  for (sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
  if (channel != LMP_CHANNEL_FD && dup2(channel, LMP_CHANNEL_FD) < 0) _exit(127);
  /* dup2 leaves the copy open across exec; a channel already on fd 3 is
   * made so here. */
  if (fcntl(LMP_CHANNEL_FD, F_SETFD, 0) < 0) _exit(127);
  for (i = 0; i < 3; i++) fcntl(i, F_SETFD, 0);
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)base, (unsigned)(limit - 1), 0) != 0)
#endif
  {
    long fd;
    for (fd = base; fd < limit; fd++) close((int)fd);
  }
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execvp(file, args);
  _exit(127);
}

void lmp__check_worker_args(lua_State *L, int index, char **args, int room) {
  int n = (int)lua_rawlen(L, index), i;
  if (n > room - 1) luaL_argerror(L, index, "too many arguments");
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, index, i + 1);
    args[i] = (char *)luaL_checkstring(L, -1); /* anchored by the table */
    lua_pop(L, 1);
  }
  args[n] = NULL;
}

/* core.spawn(file, args, on_message, on_exit) -> handle
 * The worker is started with vfork and execs its program; this process
 * does not wait for the exec to succeed (libuv's uv_spawn forks and waits
 * for it, to report an exec failure), so a pool starts all its workers
 * at once. A program that cannot be run is
 * reported here when it is missing or not executable; one that fails at
 * exec all the same dies at once, with status 127. */
static int core_spawn(lua_State *L) {
  const char *file = luaL_checkstring(L, 1);
  char *args[64];
  int peer, r;
  long limit = 65536;
  struct rlimit rl;
  sigset_t all, old;
  pid_t pid;
  worker_handle *c;
  uv_loop_t *loop;
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_settop(L, 4);
  lmp__check_worker_args(L, 2, args, sizeof args / sizeof args[0]);
  if (strchr(file, '/') != NULL && access(file, X_OK) != 0) {
    lua_pushfstring(L, "cannot start worker '%s': %s", file, strerror(errno));
    lmp__push_error(L, "worker_lost", lua_tostring(L, -1));
    return lua_error(L);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    limit = (long)rl.rlim_cur;
  loop = lmp__loop(L); /* may refuse: before anything is allocated */
  (void)loop;
  c = lmp__new_forked_handle(L, &peer);
  /* vfork: the child borrows this process's memory until its exec, so
   * nothing is copied and no page of this process turns copy-on-write
   * (after a fork, each page this process wrote next cost a fault and a
   * TLB flush: most of a worker's start-up, and paid one worker after
   * another). This thread waits only until the child's exec has begun.
   * No handler of this process may run in the child before its exec. */
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid = vfork();
  if (pid == 0) exec_worker(file, args, peer, limit);
  r = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(peer);
  if (pid < 0) {
    lua_pushfstring(L, "cannot start worker '%s': %s", file, strerror(r));
    lmp__push_error(L, "worker_lost", lua_tostring(L, -1));
    return lua_error(L);
  }
  return lmp__watch_forked(L, c, (int)pid, 3);
}

/* Puts the n descriptors of fds at from, from + 1, ... and closes every
 * other descriptor from `from` on. Each is first copied above the targets,
 * so that no descriptor is overwritten before it was moved. */
void lmp__place_descriptors(const int *fds, int n, int from) {
  int copies[1 + LMP_MAX_PASSED_FDS], i;
  if (n > 1 + LMP_MAX_PASSED_FDS) n = 1 + LMP_MAX_PASSED_FDS;
  for (i = 0; i < n; i++) copies[i] = fcntl(fds[i], F_DUPFD, from + n);
  for (i = 0; i < n; i++) {
    if (copies[i] >= 0) dup2(copies[i], from + i);
    else close(from + i);
  }
  lmp__close_from(from + n);
}

/* In the child of core.fork_worker: becomes the worker on `fd`, running in
 * the Lua state it inherited, and never returns. */
static int (*forked_worker_run)(lua_State *L, long parent);

void lmp__on_forked_worker(int (*run)(lua_State *L, long parent)) {
  forked_worker_run = run;
}

static LMP_NORETURN void run_forked_worker(lua_State *L, int channel, long parent) {
  int status = 1;
  lmp__become_forked_worker();
  lmp__handle_forget_parents();
  /* Without its channel on the usual descriptor the worker cannot run:
   * it ends at once, and its parent sees a worker that died at start. */
  if (signal(SIGCHLD, SIG_DFL) == SIG_ERR) _exit(1);
  lmp__place_descriptors(&channel, 1, LMP_CHANNEL_FD);
  lmp__descriptors_forget_parent(); /* its duplicates went with the rest */
  if (forked_worker_run) status = forked_worker_run(L, parent);
  lmp__flush_feeders(); /* what it put on queues, as exit() would */
  fflush(NULL);
  _exit(status);
}

static void free_unstarted(uv_handle_t *handle) {
  free(handle->data);
}

/* Pushes a worker handle whose channel is one end of a new socket pair;
 * the other end, for the worker, in *peer (close-on-exec). The handle
 * reads as exited until lmp__watch_forked gives it a process. Raises on
 * failure, leaving nothing open. */
worker_handle *lmp__new_forked_handle(lua_State *L, int *peer) {
  int fds[2], r;
  uv_loop_t *loop = lmp__loop(L);
  worker_handle **box = lua_newuserdatauv(L, sizeof *box, 0), *c;
  *box = NULL;
  luaL_setmetatable(L, HANDLE_META);
  c = calloc(1, sizeof *c);
  if (c == NULL) luaL_error(L, "lmp: not enough memory");
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    free(c);
    luaL_error(L, "lmp: cannot make a channel: %s", strerror(errno));
  }
  /* The handles that need no process are made before there is one, so
   * that a failure leaves no process behind. */
  c->channel.data = c;
  if ((r = uv_pipe_init(loop, &c->channel, 1)) != 0) free(c); /* ipc: as spawn's */
  else if ((r = uv_pipe_open(&c->channel, fds[0])) != 0)
    uv_close((uv_handle_t *)&c->channel, free_unstarted);
  if (r != 0) {
    close(fds[0]);
    close(fds[1]);
    luaL_error(L, "lmp: cannot make a channel: %s", uv_strerror(r));
  }
  c->handles_open = 1;
  c->lua_owned = 1;
  c->exited = c->eof = c->reported = 1; /* till the worker runs */
  c->owner = (long)getpid();
  *box = c; /* the box's finalizer closes the channel from here on */
  *peer = fds[1];
  return c;
}

/* The handle at the top of the stack (from lmp__new_forked_handle) now
 * has a worker: `pid`, a child of this process. Watches its exit (its
 * pidfd, or SIGCHLD) and starts reading its channel; the Lua callbacks
 * are at on_message and on_message + 1. Returns 1 (the handle), or raises
 * after killing and reaping the worker if its exit cannot be watched. */
int lmp__watch_forked(lua_State *L, worker_handle *c, int pid, int on_message) {
  worker_handle **box = lua_touserdata(L, -1);
  uv_loop_t *loop = lmp__loop(L);
  int pidfd, r;
  c->pid = pid;
  c->exited = c->eof = c->reported = 0;
  /* $LMP_NO_PIDFD makes lmp take the SIGCHLD way, for its tests. */
  pidfd = getenv("LMP_NO_PIDFD") ? -1 : (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd >= 0 && uv_poll_init(loop, &c->exit_watch, pidfd) != 0) {
    close(pidfd);
    pidfd = -1;
  }
  if (pidfd >= 0) {
    c->by_pidfd = 1;
    c->pidfd = pidfd;
    c->exit_watch.data = c;
    c->handles_open++;
    r = uv_poll_start(&c->exit_watch, UV_READABLE, lmp__handle_on_pidfd);
  } else {
    siginfo_t info;
    c->pidfd = -1;
    if ((r = uv_signal_init(loop, &c->sigchld)) == 0) {
      c->sigchld.data = c;
      c->handles_open++;
      r = uv_signal_start(&c->sigchld, lmp__handle_on_sigchld, SIGCHLD);
    }
    /* An exit before the watch began raised its SIGCHLD unseen: raise
     * another (the zombie waits to be reaped). */
    memset(&info, 0, sizeof info);
    if (r == 0 && waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid)
      kill(getpid(), SIGCHLD);
  }
  if (r != 0) {
    /* Its exit could not be watched: the worker goes now, reaped here, and
     * the box's finalizer closes what was opened. */
    int status;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    c->exited = c->eof = c->reported = 1;
    return luaL_error(L, "lmp: cannot watch a worker: %s", uv_strerror(r));
  }
  return lmp__handle_started(L, c, box, on_message);
}

/* core.fork_worker(on_message, on_exit) -> handle, as core.spawn gives:
 * the "fork" start method. The child is a copy of this process, with the
 * script and everything it loaded already there: no executable to load,
 * no Lua to start, so a pool is ready in a fraction of the time. */
static int core_fork_worker(lua_State *L) {
  int peer, r;
  pid_t pid;
  long parent = (long)getpid();
  worker_handle *c;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (lmp__forked_worker())
    return luaL_error(L, "lmp: a forked worker cannot start workers of its own; use the "
                         "'spawn' start method for nested pools");
  c = lmp__new_forked_handle(L, &peer);
  /* What stdio holds unwritten would otherwise be written twice. */
  fflush(NULL);
  pid = fork();
  if (pid == 0) {
    uv_os_fd_t own;
    if (uv_fileno((uv_handle_t *)&c->channel, &own) == 0) close(own);
    run_forked_worker(L, peer, parent);
  }
  r = errno;
  close(peer);
  if (pid < 0) {
    lua_pushfstring(L, "cannot fork a worker: %s", strerror(r));
    lmp__push_error(L, "worker_lost", lua_tostring(L, -1));
    return lua_error(L);
  }
  return lmp__watch_forked(L, c, (int)pid, 1);
}

/* The descriptors a batch of forks holds until each worker has its own
 * copy (`fds`, -1 once closed), and the workers' pids: a userdata, so
 * that a raise before every descriptor was handed on closes the rest. */
typedef struct fork_batch {
  int n;
  int *fds;
  pid_t *pids;
} fork_batch;

static int fork_batch_gc(lua_State *L) {
  fork_batch *b = lua_touserdata(L, 1);
  int i;
  for (i = 0; i < b->n; i++) {
    if (b->fds[i] >= 0) close(b->fds[i]);
    b->fds[i] = -1;
  }
  return 0;
}

static fork_batch *new_fork_batch(lua_State *L, int n) {
  fork_batch *b = lua_newuserdatauv(L, sizeof *b + (size_t)n * (sizeof(int) + sizeof(pid_t)), 0);
  int i;
  b->n = n;
  b->pids = (pid_t *)(b + 1);
  b->fds = (int *)(b->pids + n);
  for (i = 0; i < n; i++) {
    b->fds[i] = -1;
    b->pids[i] = 0;
  }
  if (luaL_newmetatable(L, "lmp.ForkBatch")) {
    lua_pushcfunction(L, fork_batch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

/* In a protected call: watches the exit of worker `pid` (argument 4),
 * whose handle's box is argument 3 and callbacks arguments 1 and 2. */
static int watch_batch_worker(lua_State *L) {
  worker_handle **box = lua_touserdata(L, 3);
  int pid = (int)lua_tointeger(L, 4);
  lua_settop(L, 3);
  return lmp__watch_forked(L, *box, pid, 1);
}

/* core.fork_workers({on_message, on_exit, on_message, on_exit, ...})
 * -> {handle, ...} [, error]: the "fork" start method for several workers
 * at once, each as core.fork_worker makes one. Every channel and handle
 * is made first, then the workers are forked one right after another,
 * then each one's exit is watched. After a fork this process pays a
 * copy-on-write fault for each page it writes while a child still shares
 * it, and every fork shares them all again: what is written between two
 * forks is paid once per fork, so nothing is written there but the pid.
 * When a fork fails after the first, the workers forked so far are
 * returned with the error of the one that failed; when the first fails,
 * it raises. */
static int core_fork_workers(lua_State *L) {
  int n, i, forked, r = 0, status;
  long parent = (long)getpid();
  fork_batch *batch;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 2 && n % 2 == 0, 1, "pairs of on_message and on_exit expected");
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TFUNCTION)
      luaL_argerror(L, 1, "pairs of on_message and on_exit expected");
    lua_pop(L, 1);
  }
  n /= 2;
  if (lmp__forked_worker())
    return luaL_error(L, "lmp: a forked worker cannot start workers of its own; use the "
                         "'spawn' start method for nested pools");
  lua_settop(L, 1);
  luaL_checkstack(L, 8, NULL);
  lua_createtable(L, n, 0); /* 2: the handles */
  batch = new_fork_batch(L, n); /* 3 */
  for (i = 0; i < n; i++) {
    lmp__new_forked_handle(L, &batch->fds[i]); /* raises: the batch closes the rest */
    lua_rawseti(L, 2, i + 1);
  }
  /* What stdio holds unwritten would otherwise be written twice. */
  fflush(NULL);
  for (forked = 0; forked < n; forked++) {
    pid_t pid = fork();
    if (pid == 0) {
      /* The batch stays on this copy's stack, never collected: the
       * descriptors it lists are closed with every other one the worker
       * inherits (lmp__place_descriptors). */
      worker_handle **box;
      uv_os_fd_t own;
      lua_rawgeti(L, 2, forked + 1);
      box = lua_touserdata(L, -1);
      lua_pop(L, 1);
      if (uv_fileno((uv_handle_t *)&(*box)->channel, &own) == 0) close(own);
      run_forked_worker(L, batch->fds[forked], parent);
    }
    if (pid < 0) {
      r = errno;
      break;
    }
    batch->pids[forked] = pid;
    close(batch->fds[forked]);
    batch->fds[forked] = -1;
  }
  for (i = forked; i < n; i++) {
    close(batch->fds[i]);
    batch->fds[i] = -1;
    lua_pushnil(L);
    lua_rawseti(L, 2, i + 1); /* the box's finalizer closes its channel */
  }
  for (i = 0; i < forked; i++) {
    lua_pushcfunction(L, watch_batch_worker);
    lua_rawgeti(L, 1, 2 * i + 1);
    lua_rawgeti(L, 1, 2 * i + 2);
    lua_rawgeti(L, 2, i + 1);
    lua_pushinteger(L, batch->pids[i]);
    if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
      /* The worker whose exit could not be watched was killed and reaped
       * there; those after it, not watched yet, go the same way (the
       * ones before are watched: their handles' finalizers end them). */
      int j;
      for (j = i + 1; j < forked; j++) {
        kill(batch->pids[j], SIGKILL);
        while (waitpid(batch->pids[j], &status, 0) < 0 && errno == EINTR) {
        }
      }
      return lua_error(L);
    }
  }
  if (r == 0) {
    lua_settop(L, 2);
    return 1;
  }
  lua_pushfstring(L, "cannot fork a worker: %s", strerror(r));
  lmp__push_error(L, "worker_lost", lua_tostring(L, -1));
  if (forked == 0) return lua_error(L);
  lua_replace(L, 3);
  lua_settop(L, 3);
  return 2;
}

/* core.kill(pid [, signal]) -> true, or nil and a message. */
static int core_kill(lua_State *L) {
  int pid = (int)luaL_checkinteger(L, 1);
  int sig = (int)luaL_optinteger(L, 2, SIGTERM);
  int r = uv_kill(pid, sig);
  if (r != 0) {
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(r));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int core_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

static int core_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static int core_getppid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getppid());
  return 1;
}

static const luaL_Reg spawn_functions[] = {
    {"spawn", core_spawn}, {"fork_worker", core_fork_worker},
    {"fork_workers", core_fork_workers}, {"kill", core_kill},
    {"cpu_count", core_cpu_count}, {"getpid", core_getpid},
    {"getppid", core_getppid},
    {NULL, NULL}};

void lmp__open_spawn(lua_State *L) {
  luaL_setfuncs(L, spawn_functions, 0);
}
