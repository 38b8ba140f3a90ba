/* The "forkserver" start method, the side of the process that asks for
 * workers. The forkserver is an lmp-worker started from a clean state (it
 * has loaded lmp and nothing of the script) that forks a worker whenever
 * asked (worker.c serves). This process asks over a socket pair made when
 * the server started, so no path on disk leads to it and no other process
 * can ask: each request carries the new worker's channel end (and the
 * descriptors an lmp.Process passes) by SCM_RIGHTS; the answer is the
 * worker's pid. The server forks with CLONE_PARENT, so the worker is this
 * process's own child: its exit is watched and reaped as a forked
 * worker's is (spawn.c), and it outlives a forkserver that dies.
 * The server ends when its socket closes or this process dies. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process.h"

/* One forkserver per process, started on first need. */
static struct {
  int fd;  /* this process's end of the server's socket, or -1 */
  int pid; /* the server's pid, or 0 */
  long owner; /* the process that started it (a forked copy does not own it) */
} server = {-1, 0, 0};

/* Ends the server (closing its socket is its cue) and reaps it. */
static void stop_server(int kill_it) {
  int status;
  if (server.pid <= 0 || server.owner != (long)getpid()) {
    server.fd = -1;
    server.pid = 0;
    return;
  }
  if (server.fd >= 0) close(server.fd);
  if (kill_it) kill(server.pid, SIGKILL);
  while (waitpid(server.pid, &status, 0) < 0 && errno == EINTR) {
  }
  server.fd = -1;
  server.pid = 0;
}

/* Starts the server: `file` run with `args`, its end of a new socket pair
 * on fd 3 and no other descriptor of this process above 2. Returns 0 or
 * a negative errno. */
static int start_server(const char *file, char **args) {
  int fds[2];
  pid_t pid;
  sigset_t all, old;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return -errno;
  /* No signal handler of this process may run in the child before exec. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid = fork();
  if (pid == 0) {
    /* Only async-signal-safe calls until exec: this process may have
     * threads (queue feeders). */
    sigset_t none;
    if (fds[1] != 3) dup2(fds[1], 3);
    fcntl(3, F_SETFD, 0);
    lmp__close_from(4);
    signal(SIGPIPE, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(file, args);
    _exit(127);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(fds[1]);
  if (pid < 0) {
    int e = errno;
    close(fds[0]);
    return -e;
  }
  server.fd = fds[0];
  server.pid = (int)pid;
  server.owner = (long)getpid();
  return 0;
}

/* Asks the server for a worker on `channel`, its end of the channel.
 * Returns the worker's pid, or a negative errno (-EPIPE when the server is
 * gone). */
static int request(int channel) {
  char byte = 'F';
  struct iovec iov = {&byte, 1};
  struct msghdr msg;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } control;
  struct cmsghdr *cmsg;
  int32_t answer;
  ssize_t r;
  memset(&msg, 0, sizeof msg);
  memset(&control, 0, sizeof control);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &channel, sizeof(int));
  while ((r = sendmsg(server.fd, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (r != 1) return -EPIPE;
  if (lmp__read_exactly(server.fd, &answer, sizeof answer) != 0) return -EPIPE;
  return answer == 0 ? -EPROTO : (int)answer;
}

/* core.forkserver_fork(file, args, on_message, on_exit) -> handle,
 * as core.spawn gives. Starts the forkserver (`file` run with `args`)
 * when there is none or the one there was died, then has it fork the
 * worker. Raises an error of kind worker_lost when no worker could be
 * had. */
static int core_forkserver_fork(lua_State *L) {
  char *args[16];
  int peer, pid = -EPIPE, attempt;
  worker_handle *c;
  const char *file = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_settop(L, 4);
  lmp__check_worker_args(L, 2, args, sizeof args / sizeof args[0]);
  if (server.owner != (long)getpid()) stop_server(0); /* a forked copy's */
  c = lmp__new_forked_handle(L, &peer);
  /* A server that died (killed, or it could not start) is replaced once. */
  for (attempt = 0; attempt < 2; attempt++) {
    if (server.fd < 0 && (pid = start_server(file, args)) < 0) break;
    pid = request(peer);
    if (pid != -EPIPE) break;
    stop_server(1);
  }
  close(peer);
  if (pid < 0) {
    lua_pushfstring(L, "cannot start a worker through the forkserver '%s': %s", file,
                    pid == -EPIPE ? "the forkserver is gone" : strerror(-pid));
    lmp__push_error(L, "worker_lost", lua_tostring(L, -1));
    return lua_error(L);
  }
  return lmp__watch_forked(L, c, pid, 3);
}

/* core.forkserver_pid() -> the forkserver's pid, or nil when there is none. */
static int core_forkserver_pid(lua_State *L) {
  if (server.pid > 0 && server.owner == (long)getpid()) lua_pushinteger(L, server.pid);
  else lua_pushnil(L);
  return 1;
}

/* core.forkserver_stop(): ends the forkserver, if any, and reaps it; the
 * workers it made live on. */
static int core_forkserver_stop(lua_State *L) {
  (void)L;
  stop_server(0);
  return 0;
}

static const luaL_Reg forkserver_functions[] = {{"forkserver_fork", core_forkserver_fork},
                                                {"forkserver_pid", core_forkserver_pid},
                                                {"forkserver_stop", core_forkserver_stop},
                                                {NULL, NULL}};

void lmp__open_forkserver(lua_State *L) {
  luaL_setfuncs(L, forkserver_functions, 0);
}
