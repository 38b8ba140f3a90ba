/* Starting a worker process: the "spawn" start method (libuv starts an
 * executable with a channel on its fd 3, so its stdin, stdout and stderr
 * stay the terminal's) and the "fork" one (a copy of this process, its
 * channel moved to fd 3). Either way the result is a worker process
 * handle (process.c). Also core.kill, core.cpu_count and core.getpid. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

/* Descriptors the script opened itself (io.open, io.popen, a luv socket)
 * have no close-on-exec flag, so a worker would inherit every one and keep
 * it open for its whole life: the reader of an io.popen pipe would not see
 * end of file while workers live. Python's spawn closes them in the child;
 * lmp's child cannot tell them from its own, so the parent marks them
 * close-on-exec for the moment of the spawn (libuv's child clears the flag
 * on the descriptors it is told to pass) and clears the marks afterwards,
 * so that the script's own children (os.execute, io.popen) inherit them
 * as before. Descriptors from the soft RLIMIT_NOFILE up are left alone:
 * valgrind keeps its own there. Returns the marked descriptors (to give
 * to unmark_descriptors), or NULL with *count 0 if none or out of memory,
 * in which case the child simply inherits them, as before. */
static int *mark_descriptors(int *count) {
  struct rlimit limit;
  long ceiling = LONG_MAX;
  int *marked = NULL, capacity = 0, self;
  DIR *dir;
  struct dirent *entry;
  *count = 0;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
    ceiling = (long)limit.rlim_cur;
  dir = opendir("/proc/self/fd");
  if (dir == NULL) return NULL;
  self = dirfd(dir);
  while ((entry = readdir(dir)) != NULL) {
    char *end;
    long fd = strtol(entry->d_name, &end, 10);
    int flags;
    if (*end != '\0' || end == entry->d_name || fd < 3 || fd >= ceiling || fd == self) continue;
    flags = fcntl((int)fd, F_GETFD);
    if (flags < 0 || (flags & FD_CLOEXEC)) continue;
    if (*count == capacity) {
      int *grown = realloc(marked, (size_t)(capacity ? capacity * 2 : 16) * sizeof *marked);
      if (grown == NULL) break;
      marked = grown;
      capacity = capacity ? capacity * 2 : 16;
    }
    if (fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC) == 0) marked[(*count)++] = (int)fd;
  }
  closedir(dir);
  if (*count == 0) {
    free(marked);
    return NULL;
  }
  return marked;
}

static void unmark_descriptors(int *marked, int count) {
  int i;
  for (i = 0; i < count; i++) {
    int flags = fcntl(marked[i], F_GETFD);
    if (flags >= 0) fcntl(marked[i], F_SETFD, flags & ~FD_CLOEXEC);
  }
  free(marked);
}

/* core.spawn(file, args, on_message, on_exit) -> handle */
static int core_spawn(lua_State *L) {
  const char *file = luaL_checkstring(L, 1);
  uv_process_options_t options;
  uv_stdio_container_t stdio[4];
  char *args[64];
  int nargs, i, r, nmarked, *marked;
  worker_handle **box, *c;
  uv_loop_t *loop;
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  nargs = (int)lua_rawlen(L, 2);
  if (nargs > 62) return luaL_argerror(L, 2, "too many arguments");
  for (i = 0; i < nargs; i++) {
    lua_rawgeti(L, 2, i + 1);
    args[i] = (char *)luaL_checkstring(L, -1); /* anchored by the table */
    lua_pop(L, 1);
  }
  args[nargs] = NULL;
  loop = lmp__loop(L); /* may refuse: before anything is allocated */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, HANDLE_META);
  c = calloc(1, sizeof *c);
  /* An ipc pipe: libuv reads it with recvmsg and keeps the descriptors
   * that come with frames (process.c takes them). */
  if (c == NULL || uv_pipe_init(loop, &c->channel, 1) != 0) {
    free(c);
    return luaL_error(L, "lmp: cannot make a channel for a worker");
  }
  memset(&options, 0, sizeof options);
  memset(stdio, 0, sizeof stdio);
  c->channel.data = c;
  c->process.data = c;
  for (i = 0; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&c->channel;
  options.file = file;
  options.args = args;
  options.stdio = stdio;
  options.stdio_count = 4;
  options.exit_cb = lmp__handle_on_exit;
  marked = mark_descriptors(&nmarked);
  r = uv_spawn(loop, &c->process, &options);
  if (marked != NULL) unmark_descriptors(marked, nmarked);
  c->handles_open = 2;
  c->lua_owned = 1;
  if (r != 0) {
    c->lua_owned = 0;
    c->exited = c->eof = c->reported = 1;
    lmp__handle_close_handle((uv_handle_t *)&c->process);
    lmp__handle_close_handle((uv_handle_t *)&c->channel);
    lua_pushfstring(L, "cannot start worker '%s': %s", file, uv_strerror(r));
    lmp__push_error(L, "worker_lost", lua_tostring(L, -1));
    return lua_error(L);
  }
  c->pid = c->process.pid;
  return lmp__handle_started(L, c, box, 3);
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

static LMP_NORETURN void run_forked_worker(lua_State *L, const int *fds, int n, long parent) {
  int status = 1;
  lmp__become_forked_worker();
  lmp__handle_forget_parents();
  /* Without its channel on the usual descriptor the worker cannot run:
   * it ends at once, and its parent sees a worker that died at start. */
  if (signal(SIGCHLD, SIG_DFL) == SIG_ERR) _exit(1);
  lmp__place_descriptors(fds, n, LMP_CHANNEL_FD);
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
  c->forked = 1;
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

/* Reads the optional table of descriptors at `index` into fds + 1, after
 * the channel's place; returns how many. Raises when there are too many. */
static int passed_descriptors(lua_State *L, int index, int *fds) {
  int n = 0, i;
  if (lua_isnoneornil(L, index)) return 0;
  luaL_checktype(L, index, LUA_TTABLE);
  n = (int)lua_rawlen(L, index);
  if (n > LMP_MAX_PASSED_FDS) luaL_argerror(L, index, "too many descriptors");
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, index, i + 1);
    fds[1 + i] = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  return n;
}

/* core.fork_worker(on_message, on_exit [, fds]) -> handle, as core.spawn
 * gives: the "fork" start method. The child is a copy of this process,
 * with the script and everything it loaded already there: no executable
 * to load, no Lua to start, so a pool is ready in a fraction of the time.
 * fds are descriptors the child gets as fd 4, 5, ... (lmp.Process's). */
static int core_fork_worker(lua_State *L) {
  int fds[1 + LMP_MAX_PASSED_FDS], npassed, r;
  pid_t pid;
  long parent = (long)getpid();
  worker_handle *c;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 3);
  npassed = passed_descriptors(L, 3, fds);
  if (lmp__forked_worker())
    return luaL_error(L, "lmp: a forked worker cannot start workers of its own; use the "
                         "'spawn' start method for nested pools");
  c = lmp__new_forked_handle(L, &fds[0]);
  /* What stdio holds unwritten would otherwise be written twice. */
  fflush(NULL);
  pid = fork();
  if (pid == 0) {
    uv_os_fd_t own;
    if (uv_fileno((uv_handle_t *)&c->channel, &own) == 0) close(own);
    run_forked_worker(L, fds, 1 + npassed, parent);
  }
  r = errno;
  close(fds[0]);
  if (pid < 0) {
    lua_pushfstring(L, "cannot fork a worker: %s", strerror(r));
    lmp__push_error(L, "worker_lost", lua_tostring(L, -1));
    return lua_error(L);
  }
  return lmp__watch_forked(L, c, (int)pid, 1);
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
    {"spawn", core_spawn}, {"fork_worker", core_fork_worker}, {"kill", core_kill},
    {"cpu_count", core_cpu_count}, {"getpid", core_getpid},
    {"getppid", core_getppid},
    {NULL, NULL}};

void lmp__open_spawn(lua_State *L) {
  luaL_setfuncs(L, spawn_functions, 0);
}
