/* Blocking framed I/O on a descriptor: a worker's side of its channel
 * (plain reads and writes, since a worker does one thing at a time and
 * needs no event loop), and the connections of lmp.Pipe, which the main
 * process watches on its loop before it reads. */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "channel.h"
#include "transport.h"

#define RECV_BOX_META "lmp.RecvBuffer"

/* Waits until fd is ready for `events` (POLLIN or POLLOUT). A frame must
 * go or come whole even on a non-blocking descriptor: libuv makes a Pipe
 * end non-blocking once the main process watched it on its loop, and that
 * flag belongs to every process sharing the end. */
int lmp__wait_ready(int fd, short events) {
  struct pollfd pfd;
  int r;
  pfd.fd = fd;
  pfd.events = events;
  do {
    r = poll(&pfd, 1, -1);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : 0;
}

int lmp__read_full(int fd, char *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r == 0) return got == 0 ? 0 : -EPIPE;
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if ((r = lmp__wait_ready(fd, POLLIN)) < 0) return (int)r;
        continue;
      }
      return -errno;
    }
    got += (size_t)r;
  }
  return 1;
}

static int write_full(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t r = write(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

void lmp__decode_frame(lua_State *L, const char *body, size_t n) {
  size_t message = lmp__frame_message(L, body, n);
  lmp__decode(L, body + 4, message);
  if (n - 4 - message > 0)
    lmp__decode(L, body + 4 + message, n - 4 - message);
  else
    lua_pushnil(L);
}

static int recv_box_gc(lua_State *L) {
  lmp__buffer_free(luaL_checkudata(L, 1, RECV_BOX_META));
  return 0;
}

/* A chunk of a map is hundreds of kB each way. Through the default socket
 * buffer (about 200 kB) it goes in pieces, each needing the reader to run:
 * a worker stalls on a half-sent chunk while the main process is busy, and
 * the other way round. With room for a whole chunk, a write finishes at
 * once and each side gets on with its work. */
void lmp__widen_socket(int fd) {
  int size = LMP_CHANNEL_BUFFER;
  /* Only a matter of speed: the default buffer works, in more pieces. */
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/* Reads one frame exactly (a connection: other processes may read the
 * next one) and pushes its message and payload; 0 at end of file. */
static int recv_exact(lua_State *L, int fd) {
  char header[LMP_FRAME_HEADER];
  uint64_t length;
  lmp_buffer *b;
  int r;
  lmp__spin_until_readable(fd);
  r = lmp__read_full(fd, header, sizeof header);
  if (r == 0) return 0;
  if (r == -EPIPE) return luaL_error(L, "lmp: channel closed in the middle of a message");
  if (r < 0) return luaL_error(L, "lmp: channel read failed: %s", strerror(-r));
  length = lmp__frame_length(header);
  if (lmp__frame_message_descriptors(header) || lmp__frame_payload_descriptors(header))
    return luaL_error(L, "lmp: malformed frame on the connection (descriptors announced)");
  b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, RECV_BOX_META)) {
    lua_pushcfunction(L, recv_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (length > LMP_FRAME_MAX || lmp__buffer_reserve(b, (size_t)length) != 0)
    return luaL_error(L, "lmp: cannot receive a message of %d bytes", (int)length);
  r = lmp__read_full(fd, b->data, (size_t)length);
  if (r <= 0) return luaL_error(L, "lmp: channel closed in the middle of a message");
  lmp__decode_frame(L, b->data, (size_t)length);
  lmp__buffer_free(b);
  return 2;
}

/* The descriptors that came on the worker's channel, for the frames that
 * announce them. */
static lmp_arrivals channel_arrivals;

/* The worker's own channel is read in big gulps: tasks sent together
 * arrive with one read() instead of two each. Only the worker reads it. */
static lmp_inbox channel_inbox;

/* An apply's arguments up to this many are decoded into the task loop's
 * table (see push_frame). */
#define KEPT_ARGUMENTS 8

/* Pushes the payload of a usual task: an apply's few arguments into the
 * table at kept (with n), emptied of the last ones first; a map's chunk
 * of numbers as the bytes of its number array, a string, which
 * core.map_numbers runs without making the table; anything else as a new
 * value. */
static void push_task_payload(lua_State *L, const char *p, size_t n, int kept, int apply, int map) {
  uint32_t count = 0;
  lua_Integer i, last;
  /* The version byte, T_TABLE, then the count of the list (lmp__encode_list). */
  if (n == 0) {
    lua_pushnil(L);
    return;
  }
  if (map && lmp__is_number_list(p, n)) {
    lua_pushlstring(L, p, n);
    return;
  }
  if (apply && n >= 6 && (count = lmp__u32_at(p + 2)) <= KEPT_ARGUMENTS) {
    lua_getfield(L, kept, "n");
    last = lua_tointeger(L, -1);
    lua_pop(L, 1);
    for (i = 1; i <= last && i <= KEPT_ARGUMENTS; i++) {
      lua_pushnil(L);
      lua_rawseti(L, kept, i);
    }
    lua_pushinteger(L, (lua_Integer)count);
    lua_setfield(L, kept, "n");
    if (lmp__decode_list_into(L, p, n, kept, 1, (lua_Integer)count)) {
      lua_pushvalue(L, kept);
      return;
    }
    lua_pushinteger(L, 0);
    lua_setfield(L, kept, "n");
  }
  lmp__decode_list(L, p, n);
}

/* Pushes a frame of the worker's channel: its message, its payload (or
 * nil) and its size; returns 3. With kept (the stack index of the task
 * loop's table, or 0), the message of a usual task
 * (lmp__read_task_message) that came with no descriptors is pushed as
 * the string "task", and its id, function id and mode follow: 6. The task
 * loop would take a message table apart at once, and making it (and a
 * table for an apply's arguments) was a good part of a small task's cost
 * in the worker, the collector's share included. */
static int push_frame(lua_State *L, const char *body, size_t n, int kept) {
  const char *header = body - LMP_FRAME_HEADER, *mode;
  size_t message, mode_len;
  lua_Integer id, function_id;
  if (kept && lmp__frame_message_descriptors(header) == 0 &&
      lmp__frame_payload_descriptors(header) == 0 &&
      (message = lmp__frame_message(L, body, n)) > 0 &&
      lmp__read_task_message(body + 4, message, &id, &function_id, &mode, &mode_len)) {
    lua_pushliteral(L, "task");
    push_task_payload(L, body + 4 + message, n - 4 - message, kept,
                      mode_len == 5 && memcmp(mode, "apply", 5) == 0,
                      mode_len == 3 && memcmp(mode, "map", 3) == 0);
    lua_pushinteger(L, (lua_Integer)n);
    lua_pushinteger(L, id);
    lua_pushinteger(L, function_id);
    lua_pushlstring(L, mode, mode_len);
    return 6;
  }
  lmp__decode_frame_carrying(L, body, n, &channel_arrivals);
  lua_pushinteger(L, (lua_Integer)n);
  return 3;
}

static int recv_buffered(lua_State *L, int fd, int kept) {
  const char *body;
  size_t n;
  int got;
  if (fd == LMP_CHANNEL_FD && lmp__worker_ring_active()) {
    int r = lmp__worker_ring_next(&body, &n);
    if (r < 0) return luaL_error(L, "lmp: malformed frame in the channel's ring");
    if (r > 0) return push_frame(L, body, n, kept);
  }
  lmp__inbox_compact(&channel_inbox);
  while ((got = lmp__inbox_next(&channel_inbox, &body, &n)) == 0) {
    uv_buf_t room;
    ssize_t r;
    /* Watch for the next message; but the rest of one begun is being
     * written now: sleep in read(), or a watcher on the writer's CPU
     * would only slow the writing (a 100 MB argument took 5x longer). */
    if (channel_inbox.bytes.len == channel_inbox.used) lmp__spin_until_readable(fd);
    lmp__inbox_alloc(&channel_inbox, &room);
    if (room.base == NULL) return luaL_error(L, "lmp: not enough memory for a message");
    r = lmp__recv_keeping(&channel_arrivals, fd, room.base, room.len, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return luaL_error(L, "lmp: channel read failed: %s", strerror(errno));
    if (r == 0) {
      if (channel_inbox.bytes.len > channel_inbox.used)
        return luaL_error(L, "lmp: channel closed in the middle of a message");
      return 0;
    }
    channel_inbox.bytes.len += (size_t)r;
  }
  if (got < 0) return luaL_error(L, "lmp: malformed frame on the channel (too long)");
  lmp__worker_ring_socket_read();
  /* The body stays put until the next call compacts the inbox. */
  return push_frame(L, body, n, kept);
}

static int recv_task_loop(lua_State *L) { return recv_buffered(L, LMP_CHANNEL_FD, 1); }

/* core.channel_recv([kept]) -> message, payload (or nil), size of the
 * frame: the next frame on the worker's channel; nothing at end of file.
 * Given kept (an empty table the worker's task loop keeps), what the task
 * loop does for every frame is done in this one call: names this process
 * does not know decode as placeholders (lmp__names_set_lenient) for this
 * frame only, and the reasons they were not known follow the size (an
 * array, or nil); a usual task comes as message "task" followed, after
 * those reasons, by its id, its function's id and its mode; and a usual
 * apply's few arguments come in kept, which the caller empties after the
 * task (push_frame). */
static int core_channel_recv(lua_State *L) {
  int status, n;
  if (lua_isnoneornil(L, 1)) return recv_buffered(L, LMP_CHANNEL_FD, 0);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lmp__names_set_lenient(L, 1);
  lua_pushcfunction(L, recv_task_loop);
  lua_pushvalue(L, 1);
  status = lua_pcall(L, 1, LUA_MULTRET, 0);
  /* Lenient for this frame only, whatever happened to it. */
  lmp__names_set_lenient(L, 0);
  if (status != LUA_OK) return lua_error(L);
  if ((n = lua_gettop(L) - 1) == 0) return 0;
  lmp__names_take_missing(L);
  lua_insert(L, 5);
  return n + 1;
}

/* Writes all of iov (the descriptors of `pass`, when not NULL, with the
 * first bytes). Sockets are written with MSG_NOSIGNAL: a reader that
 * is gone makes the write fail with EPIPE instead of killing this process
 * with SIGPIPE, whose default the script and its children keep. */
static int writev_full(int fd, struct iovec *iov, int n, const lmp_descriptors *pass) {
  int socket = 1;
  union {
    struct cmsghdr align;
    char bytes[CMSG_SPACE(LMP_FRAME_DESCRIPTORS_MAX * sizeof(int))];
  } control;
  while (n > 0) {
    ssize_t r;
    if (socket) {
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = iov;
      msg.msg_iovlen = (size_t)(n > IOV_MAX ? IOV_MAX : n);
      if (pass && pass->n > 0) lmp__set_descriptors(&msg, control.bytes, pass);
      r = sendmsg(fd, &msg, MSG_NOSIGNAL);
      /* The descriptors went with the first bytes written. */
      if (r > 0) pass = NULL;
      if (r < 0 && errno == ENOTSOCK && pass && pass->n > 0) return -ENOTSOCK;
      if (r < 0 && errno == ENOTSOCK) {
        socket = 0;
        continue;
      }
    } else {
      r = writev(fd, iov, n > IOV_MAX ? IOV_MAX : n);
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if ((r = lmp__wait_ready(fd, POLLOUT)) < 0) return (int)r;
        continue;
      }
      return -errno;
    }
    while (n > 0 && (size_t)r >= iov->iov_len) {
      r -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + r;
      iov->iov_len -= (size_t)r;
    }
  }
  return 0;
}

/* Encodes the message at `message` and, when `payload` is not 0, the
 * payload after it (refusals name `root`), then writes the whole frame.
 * Long strings are written from the strings themselves (writev), not
 * copied into the encoding first. */
static int send_frame(lua_State *L, int fd, int message, int payload, lua_Integer count,
                      const char *root, int worker_channel) {
  int r, n = 0, pieces_slot, box;
  lmp_buffer *b;
  size_t pieces = 0, i, from = 0, total, message_end, message_len;
  struct iovec few[8], *iov = few;
  lmp_descriptors *passed = NULL, *previous = NULL;
  int passed_box = 0;
  lua_pushnil(L); /* the long strings: offset, string, ... */
  pieces_slot = lua_gettop(L);
  b = lmp__take_encode_box(L);
  box = lua_gettop(L);
  if (lmp__buffer_reserve(b, LMP_FRAME_PREFIX) != 0) return luaL_error(L, "lmp: not enough memory");
  b->len = LMP_FRAME_PREFIX;
  /* On the worker's channel, values may carry descriptors: the message's,
   * then the payload's, each numbered from 1 (see descriptors.c). */
  if (worker_channel) {
    passed = lmp__take_descriptors(L);
    passed_box = lua_gettop(L);
    previous = lmp__descriptors_collect(passed);
  }
  r = lmp__encode_pieces(L, message, b, payload ? "" : root, pieces_slot);
  if (worker_channel) passed->base = passed->n;
  message_end = b->len;
  message_len = message_end - LMP_FRAME_PREFIX;
  if (r == 0 && payload && lua_type(L, payload) == LUA_TSTRING) {
    /* Encoded already (core.map_numbers): the bytes as they are. */
    size_t len;
    const char *bytes = lua_tolstring(L, payload, &len);
    if (lmp__buffer_append(b, bytes, len) != 0) return luaL_error(L, "lmp: not enough memory");
  } else if (r == 0 && payload) {
    r = count >= 0 ? lmp__encode_list(L, payload, 1, count, 1, b, root, pieces_slot, 0)
                   : lmp__encode_pieces(L, payload, b, root, pieces_slot);
  }
  if (worker_channel) lmp__descriptors_collect(previous);
  if (r != 0) return lua_error(L);
  if (!lua_isnil(L, pieces_slot)) pieces = lua_rawlen(L, pieces_slot) / 2;
  if (2 * pieces + 1 > sizeof few / sizeof few[0])
    iov = lua_newuserdatauv(L, (2 * pieces + 1) * sizeof *iov, 0);
  total = b->len;
  for (i = 0; i < pieces; i++) {
    size_t at, len;
    const char *s;
    lua_rawgeti(L, pieces_slot, (lua_Integer)(2 * i + 1));
    at = (size_t)lua_tointeger(L, -1);
    lua_rawgeti(L, pieces_slot, (lua_Integer)(2 * i + 2));
    s = lua_tolstring(L, -1, &len);
    lua_pop(L, 2); /* the table keeps the string */
    if (at <= message_end) message_len += len; /* a piece of the message */
    iov[n].iov_base = b->data + from;
    iov[n++].iov_len = at - from;
    iov[n].iov_base = (char *)s;
    iov[n++].iov_len = len;
    from = at;
    total += len;
  }
  iov[n].iov_base = b->data + from;
  iov[n++].iov_len = b->len - from;
  if (message_len > UINT32_MAX) return luaL_error(L, "lmp: a message over 4 GB cannot be sent");
  lmp__frame_set_length(b->data, total - LMP_FRAME_HEADER);
  lmp__set_u32_at(b->data + LMP_FRAME_HEADER, (uint32_t)message_len);
  /* Into the ring when the worker has one and the frame fits with no
   * descriptor (counted as a socket frame otherwise). */
  if (worker_channel && fd == LMP_CHANNEL_FD && lmp__worker_ring_active() &&
      lmp__worker_ring_send(iov, n, total, passed->n > 0))
    n = 0;
  if (n == 0) {
    r = 0;
  } else if (worker_channel && passed->n > 0) {
    lmp__frame_set_descriptors(b->data, passed->base, passed->n - passed->base);
    r = writev_full(fd, iov, n, passed);
  } else {
    r = writev_full(fd, iov, n, NULL);
  }
  /* Sent: the receiver has its own descriptors; these are closed. */
  if (worker_channel) lmp__give_back_descriptors(L, passed_box);
  lmp__give_back_encode_box(L, box);
  /* A worker's channel broken: its main process is gone, and so is
   * everyone who could hear of this; the worker ends quietly (its output
   * flushed), as it would at end of file. */
  if (r < 0 && worker_channel && (r == -EPIPE || r == -ECONNRESET))
    exit(0);
  if (r < 0) return luaL_error(L, "lmp: channel write failed: %s", strerror(-r));
  return 0;
}

/* core.channel_send(message [, values, count]): a frame on the worker's
 * channel; values[1 .. count] are a task's results, sent as a list (no
 * traversal of the table; refusals name "result[k]"); values may instead
 * be the list encoded already, a string (core.map_numbers). */
static int core_channel_send(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 3);
  if (lua_isnil(L, 2)) return send_frame(L, LMP_CHANNEL_FD, 1, 0, -1, "result", 1);
  if (lua_type(L, 2) == LUA_TSTRING) return send_frame(L, LMP_CHANNEL_FD, 1, 2, -1, "result", 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  return send_frame(L, LMP_CHANNEL_FD, 1, 2, luaL_checkinteger(L, 3), "result", 1);
}

/* ---- connections (lmp.Pipe) ------------------------------------------- */

#define CONNECTION_META "lmp.Connection"

/* What an end may do: both, or one only (the ends of Pipe(false)). */
enum { DUPLEX, RECEIVE_ONLY, SEND_ONLY };

typedef struct connection {
  int fd;          /* -1 once closed */
  int mode;        /* DUPLEX, RECEIVE_ONLY or SEND_ONLY */
  uv_poll_t *watch; /* while the main process waits for it to be readable */
  long owner;      /* the process that made it: a forked worker inherits
                      its parent's connections, not theirs to close */
} connection;

typedef struct watch_data {
  lua_State *L;
  int callback_ref;
} watch_data;

static connection *check_connection(lua_State *L) {
  connection *c = luaL_checkudata(L, 1, CONNECTION_META);
  if (c->fd < 0) luaL_error(L, "lmp: the connection is closed");
  return c;
}

/* The connection at 1, which must be open and able to receive (send). */
static connection *check_receiving(lua_State *L) {
  connection *c = check_connection(L);
  if (c->mode == SEND_ONLY)
    luaL_error(L, "lmp: this end of a one-way Pipe only sends (Pipe(false) returns the "
                  "receiving end first, then the sending end)");
  return c;
}

static connection *check_sending(lua_State *L) {
  connection *c = check_connection(L);
  if (c->mode == RECEIVE_ONLY)
    luaL_error(L, "lmp: this end of a one-way Pipe only receives (Pipe(false) returns the "
                  "receiving end first, then the sending end)");
  return c;
}

static void watch_closed(uv_handle_t *handle) {
  free(handle->data);
  free(handle);
}

static void stop_watch(connection *c) {
  if (c->watch == NULL) return;
  uv_poll_stop(c->watch);
  uv_close((uv_handle_t *)c->watch, watch_closed);
  c->watch = NULL;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  watch_data *data = handle->data;
  (void)status;
  (void)events;
  uv_poll_stop(handle); /* once: the waiter reads, then watches again */
  if (data->L == NULL || data->callback_ref == LUA_NOREF) return;
  lua_rawgeti(data->L, LUA_REGISTRYINDEX, data->callback_ref);
  lmp__call_protected(data->L, 0);
}

/* conn:watch(fn): fn() runs on the loop when the connection is readable. */
static int connection_watch(lua_State *L) {
  connection *c = check_receiving(L);
  watch_data *data;
  uv_loop_t *loop;
  int r;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  /* Whatever can raise comes before anything is allocated: lmp__loop
   * refuses in a forked worker, luaL_ref may run out of memory. */
  loop = lmp__loop(L);
  lua_pushvalue(L, 2);
  r = luaL_ref(L, LUA_REGISTRYINDEX);
  if (c->watch == NULL) {
    uv_poll_t *watch = malloc(sizeof *watch);
    data = malloc(sizeof *data);
    if (watch == NULL || data == NULL || uv_poll_init(loop, watch, c->fd) != 0) {
      free(watch);
      free(data);
      luaL_unref(L, LUA_REGISTRYINDEX, r);
      return luaL_error(L, "lmp: cannot watch the connection");
    }
    data->L = lmp__main_thread(L);
    data->callback_ref = LUA_NOREF;
    watch->data = data;
    c->watch = watch;
  }
  data = c->watch->data;
  luaL_unref(L, LUA_REGISTRYINDEX, data->callback_ref);
  data->callback_ref = r;
  if ((r = uv_poll_start(c->watch, UV_READABLE | UV_DISCONNECT, on_readable)) != 0)
    return luaL_error(L, "lmp: cannot watch the connection: %s", uv_strerror(r));
  return 0;
}

static int connection_close(lua_State *L) {
  connection *c = luaL_checkudata(L, 1, CONNECTION_META);
  if (c->owner != (long)getpid()) {
    c->fd = -1;
    c->watch = NULL;
    return 0;
  }
  if (c->watch) {
    watch_data *data = c->watch->data;
    luaL_unref(L, LUA_REGISTRYINDEX, data->callback_ref);
    data->callback_ref = LUA_NOREF;
    data->L = NULL;
    stop_watch(c);
  }
  /* A queue's feeder may still be writing what was put: it closes the
   * descriptor when it is done. */
  if (c->fd >= 0 && !lmp__feeder_adopt(c->fd)) close(c->fd);
  c->fd = -1;
  return 0;
}

/* conn:readable([seconds]) -> whether a message (or end of file) waits. */
static int connection_readable(lua_State *L) {
  connection *c = check_receiving(L);
  double seconds = luaL_optnumber(L, 2, 0);
  struct pollfd pfd;
  int r;
  pfd.fd = c->fd;
  pfd.events = POLLIN;
  do {
    r = poll(&pfd, 1, seconds < 0 ? -1 : (int)(seconds * 1000));
  } while (r < 0 && errno == EINTR);
  lua_pushboolean(L, r > 0);
  return 1;
}

static int connection_send(lua_State *L) {
  connection *c = check_sending(L);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  return send_frame(L, c->fd, 2, 0, -1, "", 0);
}

/* conn:recv() -> value, or nothing at end of file. */
static int connection_recv(lua_State *L) {
  connection *c = check_receiving(L);
  int n;
  lua_settop(L, 0);
  n = recv_exact(L, c->fd);
  if (n == 0) return 0;
  lua_pop(L, 1); /* connections carry no payload */
  return 1;
}

static int connection_fileno(lua_State *L) {
  lua_pushinteger(L, check_connection(L)->fd);
  return 1;
}

/* conn:mode() -> "duplex", "receive" or "send". */
static int connection_mode(lua_State *L) {
  static const char *const names[] = {"duplex", "receive", "send"};
  lua_pushstring(L, names[check_connection(L)->mode]);
  return 1;
}

static int new_connection(lua_State *L, int fd, int mode) {
  connection *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->fd = fd;
  c->mode = mode;
  c->watch = NULL;
  c->owner = (long)getpid();
  luaL_setmetatable(L, CONNECTION_META);
  return 1;
}

static int core_connection_of(lua_State *L, int fd, int mode) {
  /* A descriptor this process does not have (a Pipe end that was not
   * inherited) is refused here, not at its first use. */
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
    return luaL_error(L, "lmp: no connection on descriptor %d: %s", fd, strerror(errno));
  return new_connection(L, fd, mode);
}

/* core.connection(fd [, mode]) -> connection owning fd (in a child: an
 * inherited one); mode as conn:mode() gives it. */
static int core_connection(lua_State *L) {
  static const char *const modes[] = {"duplex", "receive", "send", NULL};
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "a descriptor (0 or more) expected");
  return core_connection_of(L, (int)fd, luaL_checkoption(L, 2, "duplex", modes));
}

/* core.pipe([duplex]) -> two connected connections (a socket pair); with
 * duplex false, the first only receives and the second only sends. */
static int core_pipe(lua_State *L) {
  int fds[2], one_way = lua_isboolean(L, 1) && !lua_toboolean(L, 1);
  /* Both userdata first: an error while making them leaks no descriptor. */
  connection *a = (new_connection(L, -1, one_way ? RECEIVE_ONLY : DUPLEX), lua_touserdata(L, -1));
  connection *b = (new_connection(L, -1, one_way ? SEND_ONLY : DUPLEX), lua_touserdata(L, -1));
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return luaL_error(L, "lmp: cannot make a pipe: %s", strerror(errno));
  a->fd = fds[0];
  b->fd = fds[1];
  return 2;
}

/* ---- what lmp.Queue builds on: a shared lock file ---------------------- */

/* core.lockfile() -> connection for a fresh unlinked file: bytes 0-2 are
 * locked with fcntl record locks (held per process, so they exclude each
 * other across processes that inherited the descriptor). */
static int core_lockfile(lua_State *L) {
  char path[] = "/tmp/lmp-queue-XXXXXX";
  char zero[8] = {0};
  connection *c;
  int r;
  new_connection(L, -1, DUPLEX); /* first: it owns the file from here on */
  c = lua_touserdata(L, -1);
  c->fd = mkostemp(path, O_CLOEXEC);
  if (c->fd < 0) return luaL_error(L, "lmp: cannot make a queue: %s", strerror(errno));
  unlink(path);
  if ((r = write_full(c->fd, zero, sizeof zero)) != 0)
    return luaL_error(L, "lmp: cannot make a queue: %s", strerror(-r));
  return 1;
}

/* core.fd_lock(fd, byte [, wait]) -> whether the lock on that byte is ours. */
static int core_fd_lock(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), r;
  struct flock lock;
  memset(&lock, 0, sizeof lock);
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = (off_t)luaL_checkinteger(L, 2);
  lock.l_len = 1;
  do {
    r = fcntl(fd, lua_toboolean(L, 3) ? F_SETLKW : F_SETLK, &lock);
  } while (r < 0 && errno == EINTR);
  lua_pushboolean(L, r == 0);
  return 1;
}

/* core.fd_unlock(fd, byte) -> whether the byte's lock was let go. */
static int core_fd_unlock(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  struct flock lock;
  memset(&lock, 0, sizeof lock);
  lock.l_type = F_UNLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = (off_t)luaL_checkinteger(L, 2);
  lock.l_len = 1;
  /* Only a descriptor that is not open fails: said, not raised, since the
   * callers unlock on their way out of an error. */
  lua_pushboolean(L, fcntl(fd, F_SETLK, &lock) == 0);
  return 1;
}

static const luaL_Reg connection_methods[] = {
    {"send", connection_send},         {"recv", connection_recv},
    {"readable", connection_readable}, {"watch", connection_watch},
    {"fileno", connection_fileno},     {"close", connection_close},
    {"mode", connection_mode},
    {NULL, NULL}};

static const luaL_Reg channel_functions[] = {
    {"ring_attach", lmp__core_ring_attach},
    {"channel_recv", core_channel_recv}, {"channel_send", core_channel_send},
    {"pipe", core_pipe},                 {"connection", core_connection},
    {"lockfile", core_lockfile},         {"fd_lock", core_fd_lock},
    {"fd_unlock", core_fd_unlock},      {NULL, NULL}};

void lmp__open_channel(lua_State *L) {
  luaL_setfuncs(L, channel_functions, 0);
  if (luaL_newmetatable(L, CONNECTION_META)) {
    luaL_newlib(L, connection_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, connection_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, connection_close);
    lua_setfield(L, -2, "__close");
  }
  /* The Lua layer adds methods and __lmp_serialize here. */
  lua_setfield(L, -2, "Connection");
}
