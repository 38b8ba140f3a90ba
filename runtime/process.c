/* The parent's side of one worker process: spawn.c starts it with a
 * channel (a socket pair on the child's fd 3, so its stdin, stdout and
 * stderr stay the terminal's), frames values onto the channel, and hands each arriving
 * value to a Lua function. When the process has exited and its channel is
 * drained, one exit callback reports how it ended. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "channel.h"
#include "process.h"

/* Every worker process still running, in all states: on Ctrl-C they are
 * killed and reaped before the process exits. */
static worker_handle *live_children;
static worker_handle *inherited_children; /* in a forked worker: its parent's */

static void add_live(worker_handle *c) {
  /* A relayed worker is no process of this machine: the transport that
   * relays it ends it. */
  if (c->relayed) return;
  c->next = live_children;
  if (live_children) live_children->prev = c;
  live_children = c;
}

static void remove_live(worker_handle *c) {
  if (c->prev) c->prev->next = c->next;
  else if (live_children == c) live_children = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

/* The handle that tells of the worker's exit: the poll on its pidfd, or
 * the SIGCHLD watch. */
static uv_handle_t *exit_handle(worker_handle *c) {
  return c->by_pidfd ? (uv_handle_t *)&c->exit_watch : (uv_handle_t *)&c->sigchld;
}

void lmp__handle_forget_parents(void) {
  /* The parent's workers are its to kill, not ours; the list stays
   * reachable (not leaked: it is the parent's memory, copied). */
  inherited_children = live_children;
  live_children = NULL;
  lmp__rings_forget_parent();
  lmp__channel_forget_ring();
}

/* Whether part of a message from a worker has arrived and the rest is on
 * its way: the probe the loop asks before it spins (lmp__receiving). */
static int receiving(void) {
  worker_handle *c;
  for (c = live_children; c; c = c->next)
    if (c->inbox.bytes.len > c->inbox.used) return 1;
  return 0;
}

int lmp__kill_all_workers(void) {
  worker_handle *c;
  int n = 0;
  for (c = live_children; c; c = c->next) {
    kill(c->pid, SIGKILL);
    /* A worker of a pool with kill_orphans leads a process group of its
     * own, which the terminal's Ctrl-C does not reach: what its tasks
     * started goes too. (No group has that id otherwise: ESRCH.) */
    kill(-c->pid, SIGKILL);
    n++;
  }
  for (c = live_children; c; c = c->next) {
    int status;
    waitpid(c->pid, &status, 0);
  }
  live_children = NULL;
  return n;
}

static void on_handle_closed(uv_handle_t *handle) {
  worker_handle *c = handle->data;
  if (--c->handles_open == 0 && !c->lua_owned) {
    lmp__arrivals_free(&c->arrived);
    lmp__inbox_free(&c->inbox);
    lmp__buffer_free(&c->outbox);
    lmp__buffer_free(&c->task_frame);
    /* Not with the ring: a view handed to Lua may point into it. */
    lmp__buffer_free(&c->ring_copy);
    lmp__ring_release(c);
    free(c);
  }
}

void lmp__handle_close_handle(uv_handle_t *handle) {
  if (!uv_is_closing(handle)) uv_close(handle, on_handle_closed);
}

static void forget_lua(worker_handle *c) {
  if (c->L == NULL) return;
  luaL_unref(c->L, LUA_REGISTRYINDEX, c->on_message_ref);
  luaL_unref(c->L, LUA_REGISTRYINDEX, c->on_exit_ref);
  luaL_unref(c->L, LUA_REGISTRYINDEX, c->view_ref);
  c->on_message_ref = c->on_exit_ref = c->view_ref = LUA_NOREF;
  c->L = NULL;
}

/* How many frames the dead worker took from its channel (-1: not
 * known), so that the pool runs elsewhere what it never read. With a
 * ring, the worker counted them there (ring.h, taken). On a socket alone
 * only the kernel knows, and it tells one thing: a worker whose end
 * closed with bytes of ours unread reset ours (ECONNRESET, which a read
 * or SO_ERROR reports once). Those bytes end the stream, so the last
 * frame sent was not read whole: not taken. A worker that read every
 * byte (perhaps without taking the frames in them yet), or whose end a
 * child of its keeps open, leaves nothing to tell (SIOCOUTQ is 0 once
 * the worker's end is gone, read or not). */
static int64_t frames_taken(worker_handle *c) {
  uv_os_fd_t fd;
  int err = 0;
  socklen_t len = sizeof err;
  if (c->ring != NULL) return lmp__ring_taken(c);
  if (c->relayed || c->frames_sent == 0) return -1;
  if (!c->reset && uv_fileno((uv_handle_t *)&c->channel, &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == ECONNRESET)
    c->reset = 1;
  return c->reset ? (int64_t)c->frames_sent - 1 : -1;
}

/* The worker is gone once it has exited and everything it wrote has been
 * read: only then can the pool tell which tasks it finished. on_exit gets
 * its status, its signal and how many frames it took (nil: not known). */
static void report_if_gone(worker_handle *c) {
  lua_State *L = c->L;
  int64_t taken;
  if (!c->exited || !c->eof || c->reported) return;
  /* The worker's last frames may wait in its ring. */
  lmp__ring_drain(c);
  if (c->reported) return;
  c->reported = 1;
  taken = frames_taken(c);
  lmp__ring_release(c); /* nothing more comes or goes */
  lmp__handle_close_handle((uv_handle_t *)&c->channel);
  if (L == NULL) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_exit_ref);
  lua_pushinteger(L, (lua_Integer)c->exit_status);
  lua_pushinteger(L, c->term_signal);
  if (taken >= 0) lua_pushinteger(L, (lua_Integer)taken);
  else lua_pushnil(L);
  forget_lua(c);
  lmp__call_protected(L, 3);
}

static void drain_channel(worker_handle *c);

/* The exit itself is the worker's end, not the end of file on its channel:
 * a child the worker left behind may hold the channel open for ever. What
 * the worker wrote before it died is read now, and the exit reported. */
static void worker_exited(worker_handle *c, int64_t exit_status, int term_signal) {
  uv_handle_t *channel = (uv_handle_t *)&c->channel;
  remove_live(c);
  c->exited = 1;
  c->exit_status = exit_status;
  c->term_signal = term_signal;
  lmp__handle_close_handle(exit_handle(c));
  drain_channel(c);
  if (!c->eof) {
    c->eof = 1;
    if (!uv_is_closing(channel)) uv_read_stop((uv_stream_t *)channel);
  }
  report_if_gone(c);
}

/* Stops watching a worker's exit (the handle is closed later). */
static void stop_exit_watch(worker_handle *c) {
  if (c->by_pidfd) {
    if (c->pidfd < 0) return;
    uv_poll_stop(&c->exit_watch);
    close(c->pidfd);
    c->pidfd = -1;
  } else {
    uv_signal_stop(&c->sigchld);
  }
}

/* Reaps a worker if it has exited. A relayed one's end arrives
 * as two integers, its exit status and signal, on its report socket (or
 * as the socket's end, read as a kill, when the relay itself is gone). */
static void reap_worker(worker_handle *c) {
  int wstatus;
  if (c->relayed) {
    int report[2] = {0, SIGKILL};
    ssize_t n;
    if (c->exited) return;
    do n = recv(c->pidfd, report, sizeof report, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n != (ssize_t)sizeof report) report[0] = 0, report[1] = SIGKILL;
    stop_exit_watch(c);
    worker_exited(c, report[0], report[1]);
    return;
  }
  if (c->exited || waitpid(c->pid, &wstatus, WNOHANG) != c->pid) return;
  stop_exit_watch(c);
  if (WIFSIGNALED(wstatus)) worker_exited(c, 0, WTERMSIG(wstatus));
  else worker_exited(c, WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 0, 0);
}

/* A worker's pidfd is readable once it has exited. */
void lmp__handle_on_pidfd(uv_poll_t *watch, int status, int events) {
  (void)status;
  (void)events;
  reap_worker(watch->data);
}

/* Any child's exit raises SIGCHLD: it may be this one's. */
void lmp__handle_on_sigchld(uv_signal_t *handle, int signum) {
  (void)signum;
  reap_worker(handle->data);
}

/* ---- descriptors that come with a worker's frames ----------------------- */

static void holder_closed(uv_handle_t *handle) {
  free(handle);
}

/* libuv reads the channel (an ipc pipe) with recvmsg and keeps the
 * descriptors that come with the bytes; each is taken out through a pipe
 * handle made for it (uv_accept), duplicated, and the handle closed.
 * Returns 0, or -1 when one could not be kept: the frames and their
 * descriptors no longer match. */
static int take_pending(worker_handle *c) {
  while (uv_pipe_pending_count(&c->channel) > 0) {
    uv_pipe_t *holder = malloc(sizeof *holder);
    uv_os_fd_t fd;
    int copy = -1;
    if (holder == NULL || uv_pipe_init(c->channel.loop, holder, 0) != 0) {
      free(holder);
      return -1;
    }
    if (uv_accept((uv_stream_t *)&c->channel, (uv_stream_t *)holder) == 0 &&
        uv_fileno((uv_handle_t *)holder, &fd) == 0)
      copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    uv_close((uv_handle_t *)holder, holder_closed);
    if (copy < 0 || lmp__arrivals_keep(&c->arrived, copy) != 0) return -1;
  }
  return 0;
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  lmp__inbox_alloc(&((worker_handle *)handle->data)->inbox, buf);
}

/* A message's payload is handed to Lua undecoded, as a view of the bytes
 * in the inbox, valid only while the handler runs: the handler decodes it
 * as a value, or straight into a table it has (core.payload_into), which
 * spares a table and a copy per chunk of a map. */
typedef struct payload_view {
  const char *p; /* NULL once the handler has returned */
  size_t n;
  lmp_descriptors *descriptors; /* those the payload carries, or NULL */
} payload_view;

#define VIEW_META "lmp.PayloadView"

static const char view_meta_key = 'v';

/* (core.payload_value and core.payload_into have the views' metatable as
 * their upvalue 1: they run once per answer.) */
static payload_view *check_view(lua_State *L, int idx) {
  payload_view *view = lmp__to_class_at(L, idx, lua_upvalueindex(1), &view_meta_key);
  if (view == NULL) luaL_typeerror(L, idx, VIEW_META);
  if (view->p == NULL) luaL_error(L, "lmp: a payload view is used after its message was handled");
  return view;
}

/* Decodes a value whose descriptors are in d (NULL: none). */
static void decode_offering(lua_State *L, const char *p, size_t n, lmp_descriptors *d) {
  lmp_descriptors *previous = lmp__descriptors_offer(d);
  lmp__decode(L, p, n);
  lmp__descriptors_offer(previous);
}

/* core.payload_value(view or table) -> the value (a table is itself): an
 * answer's list, {n = count, ...}. */
static int core_payload_value(lua_State *L) {
  payload_view *view;
  lmp_descriptors *previous;
  if (lua_type(L, 1) == LUA_TTABLE) return 1;
  view = check_view(L, 1);
  previous = lmp__descriptors_offer(view->descriptors);
  lmp__decode_list(L, view->p, view->n);
  lmp__descriptors_offer(previous);
  return 1;
}

/* core.payload_chunk(view or table) -> an imap chunk's values: its bytes,
 * as a string, when the answer is a list of numbers (core.cursor_load
 * reads them there: no table made, no value written into one), else as
 * core.payload_value. A copy of the bytes: the chunk may wait for those
 * before it, and the view ends with this message. */
static int core_payload_chunk(lua_State *L) {
  payload_view *view;
  lmp_number_list numbers;
  if (lua_type(L, 1) == LUA_TTABLE) return 1;
  view = check_view(L, 1);
  if (lmp__open_number_list(view->p, view->n, &numbers)) {
    lua_pushlstring(L, view->p, view->n);
    return 1;
  }
  return core_payload_value(L);
}

/* core.payload_into(view or table, dst, first, count): dst[first + k - 1]
 * = item k of the list for k in 1..count. */
static int core_payload_into(lua_State *L) {
  lua_Integer first = luaL_checkinteger(L, 3), count = luaL_checkinteger(L, 4), i;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (lua_type(L, 1) != LUA_TTABLE) {
    payload_view *view = check_view(L, 1);
    lmp_descriptors *previous = lmp__descriptors_offer(view->descriptors);
    int done = lmp__decode_list_into(L, view->p, view->n, 2, first, count);
    lmp__descriptors_offer(previous);
    if (done) return 0;
    decode_offering(L, view->p, view->n, view->descriptors);
    lua_replace(L, 1);
  }
  for (i = 1; i <= count; i++) {
    lua_rawgeti(L, 1, i);
    lua_rawseti(L, 2, first + i - 1);
  }
  return 0;
}

/* The channel carried something that is not a frame of lmp's (garbage, or
 * a message that does not decode): nothing after it can be trusted, so it
 * is read no more, and the owner learns why, as on_message(nil, reason)
 * (a pool then kills the worker). */
void lmp__handle_channel_broken(worker_handle *c, const char *reason) {
  lua_State *L = c->L;
  if (c->broken) return;
  c->broken = 1;
  if (!uv_is_closing((uv_handle_t *)&c->channel)) uv_read_stop((uv_stream_t *)&c->channel);
  if (L == NULL) return;
  luaL_checkstack(L, 4, "lmp: reporting a broken channel");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_message_ref);
  lua_pushnil(L);
  lua_pushstring(L, reason);
  lmp__call_protected(L, 2);
}

#define GARBAGE_HEADER \
  "a frame header announcing more than 1 TB or 64 descriptors (garbage on the channel)"

/* Runs protected, given a view of a frame's body and the box of the
 * message's descriptors: pushes the message and moves the view onto the
 * payload (n = 0: none). Raises on malformed bytes. */
static int decode_message(lua_State *L) {
  payload_view *view = lua_touserdata(L, 1);
  size_t message = lmp__frame_message(L, view->p, view->n);
  decode_offering(L, view->p + 4, message, lua_touserdata(L, 2));
  view->p += 4 + message;
  view->n -= 4 + message;
  return 1;
}

/* A message that is one integer (a task's answer, most often) cannot fail
 * to decode: it is read here, without the protected call of
 * decode_message. Pushes it and moves the view as decode_message does;
 * returns 0, having done nothing, for any other message. */
static int decode_integer_message(lua_State *L, payload_view *view, int carries_descriptors) {
  size_t message;
  if (carries_descriptors || view->n < 4) return 0;
  message = lmp__u32_at(view->p);
  if (message > view->n - 4 || !lmp__decode_integer(L, view->p + 4, message)) return 0;
  view->p += 4 + message;
  view->n -= 4 + message;
  return 1;
}

void lmp__handle_deliver_frame(void *ctx, const char *body, size_t n) {
  worker_handle *c = ctx;
  lua_State *L = c->L;
  payload_view *view;
  lmp_descriptors *message, *payload;
  int counts[2], status = LUA_OK;
  if (L == NULL || c->broken) return;
  luaL_checkstack(L, 10, "lmp: delivering a message");
  /* The descriptors the frame carries, in boxes that close what no value
   * takes (nil, and no box made, for none). */
  counts[0] = lmp__frame_message_descriptors(body - LMP_FRAME_HEADER);
  counts[1] = lmp__frame_payload_descriptors(body - LMP_FRAME_HEADER);
  if (c->arrived.count < (size_t)(counts[0] + counts[1])) {
    lmp__handle_channel_broken(c, "a frame whose descriptors did not arrive with it");
    return;
  }
  message = lmp__arrivals_take(L, &c->arrived, counts[0]);
  payload = lmp__arrivals_take(L, &c->arrived, counts[1]);
  /* One view per worker, reused for each of its messages. */
  if (c->view_ref == LUA_NOREF) {
    lua_newuserdatauv(L, sizeof *view, 0);
    luaL_setmetatable(L, VIEW_META);
    c->view_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->view_ref);
  view = lua_touserdata(L, -1);
  view->p = body;
  view->n = n;
  view->descriptors = payload;
  if (!decode_integer_message(L, view, message != NULL)) {
    lua_pushcfunction(L, decode_message);
    lua_pushvalue(L, -2);
    lua_pushlightuserdata(L, message);
    status = lua_pcall(L, 2, 1, 0);
  }
  if (status != LUA_OK) {
    char reason[200];
    const char *why = lua_tostring(L, -1);
    snprintf(reason, sizeof reason, "a malformed message (%s)", why ? why : "not decodable");
    view->p = NULL;
    view->descriptors = NULL;
    if (message) lmp__descriptors_close(message);
    if (payload) lmp__descriptors_close(payload);
    lua_pop(L, 4);
    lmp__handle_channel_broken(c, reason);
    return;
  }
  /* The view, the message: call handler(message, view of the payload or nil). */
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_message_ref);
  lua_insert(L, -2);
  if (view->n > 0) lua_pushvalue(L, -3);
  else lua_pushnil(L);
  lmp__call_protected(L, 2);
  view->p = NULL; /* the bytes are the inbox's again */
  view->descriptors = NULL;
  /* What the handler did not take is closed now, not when collected. */
  if (message) lmp__descriptors_close(message);
  if (payload) lmp__descriptors_close(payload);
  lua_pop(L, 3);
}

/* A frame from the socket: what the worker put in its ring before it
 * goes first. */
static void deliver_socket_frame(void *ctx, const char *body, size_t n) {
  lmp__ring_before_socket_frame(ctx);
  lmp__handle_deliver_frame(ctx, body, n);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  worker_handle *c = stream->data;
  (void)buf;
  if (nread > 0) {
    c->inbox.bytes.len += (size_t)nread;
    if (take_pending(c) != 0) lmp__handle_channel_broken(c, "descriptors that could not be received");
    lmp__handle_cork();
    if (lmp__inbox_frames(&c->inbox, deliver_socket_frame, c) < 0) lmp__handle_channel_broken(c, GARBAGE_HEADER);
    if (c->broken) c->inbox.bytes.len = c->inbox.used = 0;
    lmp__handle_uncork();
  } else if (nread < 0) {
    if (nread == UV_ECONNRESET) c->reset = 1; /* see frames_taken */
    uv_read_stop(stream);
    c->eof = 1;
    report_if_gone(c);
  }
}

/* Reads, without waiting, what the socket holds now: all the worker wrote
 * before it exited (and no more, should a child it left keep writing). */
static void drain_channel(worker_handle *c) {
  uv_os_fd_t fd;
  int available = 0;
  if (c->eof || c->broken || uv_is_closing((uv_handle_t *)&c->channel)) return;
  if (uv_fileno((uv_handle_t *)&c->channel, &fd) != 0) return;
  if (ioctl(fd, FIONREAD, &available) != 0) return;
  lmp__handle_cork();
  while (available > 0) {
    uv_buf_t buf;
    ssize_t r;
    /* A handler may close the handle (and a new one reuse its number). */
    if (c->broken || c->L == NULL || uv_is_closing((uv_handle_t *)&c->channel)) break;
    lmp__inbox_alloc(&c->inbox, &buf);
    if (buf.base == NULL) break;
    if (take_pending(c) != 0) lmp__handle_channel_broken(c, "descriptors that could not be received");
    r = lmp__recv_keeping(&c->arrived, fd, buf.base,
                          buf.len < (size_t)available ? buf.len : (size_t)available, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EPROTO) lmp__handle_channel_broken(c, "descriptors that could not be received");
    if (r <= 0) break;
    available -= (int)r;
    c->inbox.bytes.len += (size_t)r;
    if (lmp__inbox_frames(&c->inbox, deliver_socket_frame, c) < 0) lmp__handle_channel_broken(c, GARBAGE_HEADER);
  }
  if (c->broken) c->inbox.bytes.len = c->inbox.used = 0;
  lmp__ring_drain(c);
  lmp__handle_uncork();
}

/* The parent's side once a worker runs, whichever way it was started: the
 * Lua callbacks at on_message and on_message + 1, the box at the top. */
int lmp__handle_started(lua_State *L, worker_handle *c, worker_handle **box, int on_message) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->channel, &fd) == 0) lmp__widen_socket(fd);
  c->owner = (long)getpid();
  c->L = lmp__main_thread(L);
  lua_pushvalue(L, on_message);
  c->on_message_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, on_message + 1);
  c->on_exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->view_ref = LUA_NOREF;
  *box = c;
  add_live(c);
  if (uv_read_start((uv_stream_t *)&c->channel, on_alloc, on_read) != 0) {
    /* Nothing it says could be heard: it ends now, and its exit is
     * reported as any worker's death is. */
    c->eof = 1;
    lmp__handle_signal(c, SIGKILL);
  }
  return 1;
}

static int handle_kill(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  int sig = (int)luaL_optinteger(L, 2, SIGKILL);
  if (!c->exited) lmp__handle_signal(c, sig);
  return 0;
}

static int handle_pid(lua_State *L) {
  lua_pushinteger(L, lmp__check_handle(L)->pid);
  return 1;
}

/* Collecting the handle never leaves a process behind: a live worker is
 * killed and reaped here, since libuv stops watching a closed handle. */
static int handle_gc(lua_State *L) {
  worker_handle **box = luaL_checkudata(L, 1, HANDLE_META);
  worker_handle *c = *box;
  if (c == NULL) return 0;
  *box = NULL;
  /* A forked worker inherited its parent's handles: they are not its own
   * to kill or close (the memory is its copy, left as it is, and kept
   * reachable with the parent's list, lest valgrind count it lost). */
  if (c->owner != (long)getpid()) {
    if (c != inherited_children && c->prev == NULL && c->next == NULL) {
      c->next = inherited_children;
      if (inherited_children) inherited_children->prev = c;
      inherited_children = c;
    }
    return 0;
  }
  lmp__handle_unlist_flush(c);
  c->outbox.len = 0;
  forget_lua(c);
  if (!c->exited && c->relayed) {
    /* The relay ends the remote worker; its report is not waited for. */
    lmp__handle_signal(c, SIGKILL);
    c->exited = 1;
  } else if (!c->exited) {
    int status;
    remove_live(c);
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &status, 0);
    c->exited = 1;
  }
  c->reported = 1;
  c->lua_owned = 0;
  lmp__ring_release(c);
  if (c->handles_open == 0) {
    lmp__arrivals_free(&c->arrived);
    lmp__inbox_free(&c->inbox);
    lmp__buffer_free(&c->outbox);
    lmp__buffer_free(&c->task_frame);
    /* Not with the ring: a view handed to Lua may point into it. */
    lmp__buffer_free(&c->ring_copy);
    lmp__ring_release(c);
    free(c);
    return 0;
  }
  /* The channel is the first handle made; an exit handle exists when a
   * second one is open (or has been closed already, which is fine). */
  if (c->handles_open > 1) {
    stop_exit_watch(c);
    lmp__handle_close_handle(exit_handle(c));
  }
  lmp__handle_close_handle((uv_handle_t *)&c->channel);
  return 0;
}

/* handle:keep_loop_alive(bool): a worker with nothing to do must not keep
 * the loop running (so that luv's uv.run() can return); one with work or
 * on its way out must. */
static int handle_keep_loop_alive(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  void (*set)(uv_handle_t *) = lua_toboolean(L, 2) ? uv_ref : uv_unref;
  if (!uv_is_closing(exit_handle(c))) set(exit_handle(c));
  if (!uv_is_closing((uv_handle_t *)&c->channel)) set((uv_handle_t *)&c->channel);
  return 0;
}

static const luaL_Reg handle_methods[] = {
    {"keep_loop_alive", handle_keep_loop_alive},
    {"send", lmp__handle_send},  {"send_task", lmp__handle_send_task},
    {"flush", lmp__handle_flush},  {"close_input", lmp__handle_close_input},
    {"kill", handle_kill}, {"open_ring", lmp__handle_open_ring},
    {"ring_counts", lmp__handle_ring_counts},       {"pid", handle_pid}, {"close", handle_gc},
    {NULL, NULL}};

static const luaL_Reg process_functions[] = {
    {"payload_value", core_payload_value}, {"payload_into", core_payload_into},
    {"payload_chunk", core_payload_chunk},
    {NULL, NULL}};

/* core.signals: signal names to numbers and numbers to names ("SIGKILL"
 * <-> 9), this system's, for the messages that say how a process ended and
 * for the signals lmp.Process sends. */
static void push_signals(lua_State *L) {
  static const struct {
    const char *name;
    int number;
  } signals[] = {{"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT},
                 {"SIGILL", SIGILL},   {"SIGTRAP", SIGTRAP}, {"SIGABRT", SIGABRT},
                 {"SIGBUS", SIGBUS},   {"SIGFPE", SIGFPE},   {"SIGKILL", SIGKILL},
                 {"SIGUSR1", SIGUSR1}, {"SIGSEGV", SIGSEGV}, {"SIGUSR2", SIGUSR2},
                 {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM}, {"SIGTERM", SIGTERM},
                 {"SIGCHLD", SIGCHLD}, {"SIGCONT", SIGCONT}, {"SIGSTOP", SIGSTOP},
                 {"SIGTSTP", SIGTSTP}, {"SIGTTIN", SIGTTIN}, {"SIGTTOU", SIGTTOU},
                 {"SIGXCPU", SIGXCPU}, {"SIGXFSZ", SIGXFSZ}, {"SIGSYS", SIGSYS}};
  size_t i;
  lua_createtable(L, 32, (int)(sizeof signals / sizeof signals[0]));
  for (i = 0; i < sizeof signals / sizeof signals[0]; i++) {
    lua_pushinteger(L, signals[i].number);
    lua_setfield(L, -2, signals[i].name);
    lua_pushstring(L, signals[i].name);
    lua_rawseti(L, -2, signals[i].number);
  }
}

static const lmp_ring_delivery ring_delivery = {
    lmp__handle_deliver_frame, lmp__handle_channel_broken, lmp__handle_cork, lmp__handle_uncork};

void lmp__open_process(lua_State *L) {
  lmp__rings_deliver_with(&ring_delivery);
  push_signals(L);
  lua_setfield(L, -2, "signals");
  luaL_newmetatable(L, VIEW_META);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &view_meta_key);
  /* The handle's methods have its metatable and the payloads' as upvalues
   * (lmp__check_handle, and handle:send_task's payload). */
  if (luaL_newmetatable(L, HANDLE_META)) {
    luaL_newlibtable(L, handle_methods);
    lua_pushvalue(L, -2);
    lmp__push_payload_meta(L);
    luaL_setfuncs(L, handle_methods, 2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lmp__handle_meta_key);
  luaL_setfuncs(L, process_functions, 1); /* the views' metatable */
  lmp__loop_watch_receiving(receiving);
}
