/* What lmp.connection.wait and the byte forms of a connection stand on:
 * watching any descriptor on the loop (a flag the waiter reads, no Lua
 * call from libuv), polling a set of descriptors, a process's sentinel (a
 * pidfd, or an eventfd a thread signals, readable once the process has
 * ended), and frames whose message is raw bytes (send_bytes and
 * recv_bytes). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "inbox.h"
#include "transport.h"

#define WATCH_META "lmp.FdWatch"
#define SENTINEL_META "lmp.Sentinel"

/* ---- watching a descriptor --------------------------------------------- */

typedef struct fd_watch {
  uv_poll_t *poll; /* NULL once closed; freed in its close callback */
  int ready;
} fd_watch;

static void watch_handle_closed(uv_handle_t *handle) {
  free(handle);
}

static void on_watch_event(uv_poll_t *handle, int status, int events) {
  fd_watch *w = handle->data;
  (void)status;
  (void)events;
  uv_poll_stop(handle); /* once: the flag stays up until the watch closes */
  if (w != NULL) w->ready = 1;
}

static void stop_watching(fd_watch *w) {
  if (w->poll != NULL) {
    w->poll->data = NULL;
    uv_poll_stop(w->poll);
    uv_close((uv_handle_t *)w->poll, watch_handle_closed);
    w->poll = NULL;
  }
}

static int watch_close(lua_State *L) {
  stop_watching(luaL_checkudata(L, 1, WATCH_META));
  return 0;
}

static int watch_ready(lua_State *L) {
  fd_watch *w = luaL_checkudata(L, 1, WATCH_META);
  lua_pushboolean(L, w->ready);
  return 1;
}

/* core.fd_watch(fd) -> a watch whose :ready() turns true (and the loop
 * wakes) once fd is readable, hung up or in error; :close(). Or nil,
 * message when libuv cannot watch it (another handle of this loop watches
 * the same descriptor). libuv leaves the descriptor non-blocking. */
static int core_fd_watch(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), r;
  uv_loop_t *loop;
  fd_watch *w;
  uv_poll_t *poll;
  luaL_argcheck(L, fd >= 0, 1, "a descriptor expected");
  loop = lmp__loop(L); /* may refuse: before anything is allocated */
  w = lua_newuserdatauv(L, sizeof *w, 0);
  w->poll = NULL;
  w->ready = 0;
  luaL_setmetatable(L, WATCH_META);
  poll = malloc(sizeof *poll);
  if (poll == NULL) return luaL_error(L, "lmp: not enough memory");
  if ((r = uv_poll_init(loop, poll, fd)) != 0) {
    free(poll);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(r));
    return 2;
  }
  poll->data = w;
  w->poll = poll;
  if ((r = uv_poll_start(poll, UV_READABLE | UV_DISCONNECT, on_watch_event)) != 0) {
    stop_watching(w);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(r));
    return 2;
  }
  return 1;
}

/* core.poll_fds(list of fds, seconds) -> list of the positions (1-based)
 * of those readable, hung up or in error, waiting up to seconds for one
 * (negative: without end). */
static int core_poll_fds(lua_State *L) {
  lua_Integer n, i;
  double seconds = luaL_checknumber(L, 2);
  struct pollfd few[16], *fds = few;
  int r, timeout_ms, found = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (lua_Integer)lua_rawlen(L, 1);
  luaL_argcheck(L, n <= 4096, 1, "at most 4096 descriptors");
  if (n > (lua_Integer)(sizeof few / sizeof few[0]))
    fds = lua_newuserdatauv(L, (size_t)n * sizeof *fds, 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    fds[i].fd = (int)luaL_checkinteger(L, -1);
    fds[i].events = POLLIN;
    fds[i].revents = 0;
    lua_pop(L, 1);
  }
  timeout_ms = seconds < 0 ? -1 : seconds > 2e6 ? 2000000000 : (int)(seconds * 1000 + 0.999);
  do {
    r = poll(fds, (nfds_t)n, timeout_ms);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return luaL_error(L, "lmp: poll failed: %s", strerror(errno));
  lua_createtable(L, r, 0);
  for (i = 0; i < n; i++)
    if (fds[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
      lua_pushinteger(L, i + 1);
      lua_rawseti(L, -2, ++found);
    }
  return 1;
}

/* ---- process sentinels ----------------------------------------------- */

typedef struct sentinel {
  int fd; /* -1 once closed */
} sentinel;

static int sentinel_close(lua_State *L) {
  sentinel *s = luaL_checkudata(L, 1, SENTINEL_META);
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  return 0;
}

static int sentinel_fileno(lua_State *L) {
  sentinel *s = luaL_checkudata(L, 1, SENTINEL_META);
  if (s->fd < 0) return luaL_error(L, "lmp: the sentinel is closed");
  lua_pushinteger(L, s->fd);
  return 1;
}

static int sentinel_tostring(lua_State *L) {
  sentinel *s = luaL_checkudata(L, 1, SENTINEL_META);
  lua_pushfstring(L, "lmp.Sentinel(%d)", s->fd);
  return 1;
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* Where there is no pidfd (Linux before 5.3, or under valgrind, which
 * does not know pidfd_open), a thread of this process waits for the
 * child's end and then signals an eventfd. It waits with WNOWAIT, so that
 * the child stays for the loop to reap (and a child the loop reaped first
 * ends the wait with ECHILD, which means the same: it has ended). The
 * thread has a descriptor of its own on the eventfd, so that the sentinel
 * may be closed before the child ends. An eventfd, not a pipe, so that
 * copies a forked child inherits cannot hold the signal back. */
typedef struct exit_watch {
  pid_t pid;
  int fd;
} exit_watch;

static void *exit_watch_main(void *arg) {
  exit_watch w = *(exit_watch *)arg;
  siginfo_t info;
  uint64_t one = 1;
  free(arg);
  while (waitid(P_PID, (id_t)w.pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  while (write(w.fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  close(w.fd);
  return NULL;
}

/* An eventfd that becomes readable once child pid has ended, or -errno. */
static int watch_exit(pid_t pid) {
  exit_watch *w;
  pthread_t thread;
  pthread_attr_t attr;
  sigset_t all, old;
  siginfo_t info;
  int fd, copy, r;
  /* Only a child can be waited for: another process (ECHILD here, before
   * the loop could reap pid) gets no sentinel rather than one that says
   * at once that it has ended. */
  memset(&info, 0, sizeof info);
  if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return -errno;
  if ((fd = eventfd(0, EFD_CLOEXEC)) < 0) return -errno;
  if ((copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
    r = -errno;
    close(fd);
    return r;
  }
  if ((w = malloc(sizeof *w)) == NULL) {
    close(fd);
    close(copy);
    return -ENOMEM;
  }
  w->pid = pid;
  w->fd = copy;
  if ((r = pthread_attr_init(&attr)) != 0) {
    free(w);
    close(fd);
    close(copy);
    return -r;
  }
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  /* Signals stay with the main thread. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  r = pthread_create(&thread, &attr, exit_watch_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (r != 0) {
    free(w);
    close(fd);
    close(copy);
    return -r;
  }
  return fd;
}

/* core.sentinel(pid [, without_pidfd]) -> a sentinel of the child pid: its
 * :fileno() is a pidfd, readable once the process has ended; where the
 * kernel gives none (or without_pidfd, for the tests of the other way),
 * an eventfd that a thread signals at the child's end. The caller must
 * not have reaped pid yet (the pid could be another process's then). */
static int core_sentinel(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int without_pidfd = lua_toboolean(L, 2);
  sentinel *s;
  long fd = -1;
  luaL_argcheck(L, pid > 0 && pid <= INT32_MAX, 1, "a process id expected");
  s = lua_newuserdatauv(L, sizeof *s, 0);
  s->fd = -1;
  luaL_setmetatable(L, SENTINEL_META);
  /* pidfds are made close-on-exec. */
  if (!without_pidfd) fd = syscall(SYS_pidfd_open, (long)pid, 0L);
  if (fd < 0) fd = watch_exit((pid_t)pid);
  if (fd < 0) return luaL_error(L, "lmp: no sentinel for process %d: %s", (int)pid, strerror((int)-fd));
  s->fd = (int)fd;
  return 1;
}

/* ---- frames of raw bytes ------------------------------------------- */

/* core.write_bytes(fd, s, offset, size): one frame whose message is the
 * size bytes of s from offset (0-based), as conn:send frames a value; the
 * reader's recv decodes them as the value format, its recv_bytes returns
 * them. Raises when the write fails. */
static int core_write_bytes(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  size_t len, done = 0;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer offset = luaL_checkinteger(L, 3), size = luaL_checkinteger(L, 4);
  char prefix[LMP_FRAME_PREFIX];
  struct iovec iov[2];
  luaL_argcheck(L, offset >= 0 && (size_t)offset <= len, 3, "offset out of range");
  luaL_argcheck(L, size >= 0 && (size_t)size <= len - (size_t)offset, 4, "size out of range");
  if ((uint64_t)size > UINT32_MAX) return luaL_error(L, "lmp: a message over 4 GB cannot be sent");
  lmp__frame_set_length(prefix, (uint64_t)size + 4);
  lmp__set_u32_at(prefix + LMP_FRAME_HEADER, (uint32_t)size);
  iov[0].iov_base = prefix;
  iov[0].iov_len = sizeof prefix;
  iov[1].iov_base = (char *)s + offset;
  iov[1].iov_len = (size_t)size;
  while (done < sizeof prefix + (size_t)size) {
    struct msghdr msg;
    ssize_t r;
    int first = done < sizeof prefix;
    memset(&msg, 0, sizeof msg);
    /* What is left: part of the prefix and all the bytes, or bytes only. */
    if (first) {
      iov[0].iov_base = prefix + done;
      iov[0].iov_len = sizeof prefix - done;
      msg.msg_iov = iov;
      msg.msg_iovlen = 2;
    } else {
      iov[1].iov_base = (char *)s + offset + (done - sizeof prefix);
      iov[1].iov_len = (size_t)size - (done - sizeof prefix);
      msg.msg_iov = iov + 1;
      msg.msg_iovlen = 1;
    }
    /* MSG_NOSIGNAL: a reader that is gone fails the write (EPIPE) instead
     * of killing this process. */
    r = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        int w = lmp__wait_ready(fd, POLLOUT);
        if (w < 0) return luaL_error(L, "lmp: send_bytes failed: %s", strerror(-w));
        continue;
      }
      return luaL_error(L, "lmp: send_bytes failed: %s", strerror(errno));
    }
    done += (size_t)r;
  }
  return 0;
}

/* core.read_bytes(fd [, maxlength]) -> the message bytes of the next
 * frame; nothing at end of file; false, length when the message is longer
 * than maxlength (its bytes are left unread: the stream is out of step
 * from there). A frame with a payload (none on a connection) gives its
 * message only. Raises when the stream ends in the middle of a frame. */
static int core_read_bytes(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), r;
  lua_Integer maxlength = luaL_optinteger(L, 2, -1);
  char prefix[LMP_FRAME_PREFIX];
  uint64_t body;
  uint32_t message;
  luaL_Buffer b;
  char *p;
  r = lmp__read_full(fd, prefix, sizeof prefix);
  if (r == 0) return 0;
  if (r < 0) return luaL_error(L, "lmp: recv_bytes failed: %s", r == -EPIPE
      ? "the connection closed in the middle of a message" : strerror(-r));
  body = lmp__frame_length(prefix);
  message = lmp__u32_at(prefix + LMP_FRAME_HEADER);
  if (body > LMP_FRAME_MAX || body < 4 || message > body - 4)
    return luaL_error(L, "lmp: recv_bytes: malformed frame");
  if (maxlength >= 0 && (uint64_t)message > (uint64_t)maxlength) {
    lua_pushboolean(L, 0);
    lua_pushinteger(L, (lua_Integer)message);
    return 2;
  }
  p = luaL_buffinitsize(L, &b, message);
  if ((r = lmp__read_full(fd, p, message)) != 1)
    return luaL_error(L, "lmp: recv_bytes failed: %s", r == 0 || r == -EPIPE
        ? "the connection closed in the middle of a message" : strerror(-r));
  luaL_pushresultsize(&b, message);
  /* Whatever follows the message in the frame is not for recv_bytes. */
  body -= 4 + (uint64_t)message;
  while (body > 0) {
    char skip[4096];
    size_t n = body < sizeof skip ? (size_t)body : sizeof skip;
    if (lmp__read_full(fd, skip, n) != 1)
      return luaL_error(L, "lmp: recv_bytes: the connection closed in the middle of a message");
    body -= n;
  }
  return 1;
}

static const luaL_Reg watch_methods[] = {{"ready", watch_ready}, {"close", watch_close},
                                         {NULL, NULL}};
static const luaL_Reg sentinel_methods[] = {{"fileno", sentinel_fileno},
                                            {"close", sentinel_close}, {NULL, NULL}};
static const luaL_Reg watch_functions[] = {
    {"fd_watch", core_fd_watch},       {"poll_fds", core_poll_fds},
    {"sentinel", core_sentinel},       {"write_bytes", core_write_bytes},
    {"read_bytes", core_read_bytes},   {NULL, NULL}};

void lmp__open_watch(lua_State *L) {
  if (luaL_newmetatable(L, WATCH_META)) {
    luaL_newlib(L, watch_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, watch_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, watch_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SENTINEL_META)) {
    luaL_newlib(L, sentinel_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sentinel_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sentinel_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "a process's sentinel belongs to the process that started it");
    lua_setfield(L, -2, "__lmp_nosend");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, watch_functions, 0);
}
