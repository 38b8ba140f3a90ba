/* Being a worker: the set-up every worker does first, running
 * lmp.worker's main, and core.find_worker, which tells a pool which
 * executable to start. lmp_worker_main (embed.c) uses the first two. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

/* Receives one request of the forkserver's socket (fd 3): the byte 'F'
 * with one descriptor, the new worker's end of its channel. Returns that
 * descriptor; -2 for a request that is not exactly that (a wrong byte, no
 * descriptor, several, or something else in the control data), whose
 * descriptors are all closed; -1 once the socket is closed or broken.
 * Whoever holds the other end may send anything: room is made for one
 * descriptor more than a request carries, so that the kernel, which drops
 * what does not fit, marks a request of several as truncated. */
static int receive_request(void) {
  char byte;
  struct iovec iov = {&byte, 1};
  struct msghdr msg;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(2 * sizeof(int))];
  } control;
  struct cmsghdr *cmsg;
  ssize_t r;
  int channel = -1, count = 0, valid;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  while ((r = recvmsg(LMP_CHANNEL_FD, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (r <= 0) return -1;
  valid = byte == 'F' && !(msg.msg_flags & MSG_CTRUNC);
  for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      int n = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int)), i;
      for (i = 0; i < n; i++, count++) {
        int fd;
        memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
        if (count == 0) channel = fd;
        else close(fd);
      }
    } else {
      valid = 0;
    }
  }
  if (valid && count == 1) return channel;
  if (channel >= 0) close(channel);
  return -2;
}

/* Being the forkserver: forks a worker for each request until the socket
 * on fd 3 closes (the process that started it ended it, or died). The
 * worker is forked with CLONE_PARENT, so it is the requester's child, not
 * this process's: the requester watches and reaps it, and it outlives
 * this server. The kernel's clone is called directly (the C library has
 * no fork with CLONE_PARENT); this process runs one thread and holds no
 * lock, so the copy needs none of the care fork() takes. Returns 0 in the
 * server when done; in a worker, the worker's exit status. */
int lmp__serve_forks(lua_State *L, long parent) {
  int channel;
  /* What every worker loads first is loaded once, here. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.worker");
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "lmp forkserver: %s\n", lua_tostring(L, -1));
    return 1;
  }
  while ((channel = receive_request()) != -1) {
    int32_t answer = -EINVAL;
    if (channel >= 0) {
      long pid;
      fflush(NULL);
      pid = syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD), NULL, NULL, NULL, NULL);
      if (pid == 0) {
        lmp__place_descriptors(&channel, 1, LMP_CHANNEL_FD);
        if (lmp__become_worker(parent) != 0) return 1;
        return lmp__run_worker(L);
      }
      answer = pid < 0 ? -errno : (int32_t)pid;
      close(channel);
    }
    if (send(LMP_CHANNEL_FD, &answer, sizeof answer, MSG_NOSIGNAL) != (ssize_t)sizeof answer)
      break;
  }
  return 0;
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
  lua_pushliteral(L, LMP_FORKSERVER_FLAG);
  lua_setfield(L, -2, "forkserver_flag");
}
