/* The sending side of a worker handle: frames written on its
 * channel at once when the socket takes them, queued on libuv otherwise;
 * corking, which gathers the small frames sent while answers are handled
 * into one write per worker; closing the input. The reading side and the
 * rest of the handle are process.c's. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <uv.h>

#include "process.h"

/* The registry key of the handle's metatable (lmp.WorkerHandle). */
const char lmp__handle_meta_key = 'c';

worker_handle *lmp__check_handle(lua_State *L) {
  worker_handle **box = lmp__to_class_at(L, 1, lua_upvalueindex(1), &lmp__handle_meta_key);
  if (box == NULL) luaL_typeerror(L, 1, HANDLE_META);
  if (*box == NULL) luaL_error(L, "lmp: worker handle is closed");
  return *box;
}

void (*lmp__relay_signal)(int id, int sig);

void lmp__handle_signal(worker_handle *c, int sig) {
  if (c->relayed) {
    if (lmp__relay_signal) lmp__relay_signal(c->pid, sig);
  } else if (c->pid > 0) {
    kill(c->pid, sig);
  }
}

typedef struct write_request {
  uv_write_t req;
  char *data;             /* the frame's prefix and message (and a small
                             payload, copied), ours to free */
  lua_State *L;           /* the main thread, while `pin` holds a reference */
  int pin;                /* a payload written from where it is: its Lua
                             object, kept alive until written */
} write_request;

/* Corking. The answers a read brings make the pool send the next tasks,
 * often several to the same worker: while they are handled, small frames
 * wait in the worker's outbox, and go out in one write per worker after
 * the last answer instead of one each. */
static int corked;
static worker_handle *flush_list;

static int write_bytes(worker_handle *c, const char *data, size_t len);

static void flush_outbox(worker_handle *c) {
  if (c->outbox.len == 0) return;
  if (!c->exited && !c->eof) write_bytes(c, c->outbox.data, c->outbox.len);
  c->outbox.len = 0;
  if (c->outbox.cap > 65536) lmp__buffer_free(&c->outbox);
}

void lmp__handle_unlist_flush(worker_handle *c) {
  worker_handle **p;
  if (!c->flush_pending) return;
  for (p = &flush_list; *p; p = &(*p)->flush_next) {
    if (*p == c) {
      *p = c->flush_next;
      break;
    }
  }
  c->flush_pending = 0;
}

static void flush_all(void) {
  while (flush_list) {
    worker_handle *c = flush_list;
    flush_list = c->flush_next;
    c->flush_pending = 0;
    flush_outbox(c);
  }
}

void lmp__handle_cork(void) {
  corked++;
}

void lmp__handle_uncork(void) {
  if (--corked == 0) flush_all();
}

/* Queues a write on libuv, shielded from SIGPIPE until it is done. */
static int queue_write(write_request *w, uv_stream_t *stream, const uv_buf_t *bufs,
                       unsigned int nbufs);

static void on_written(uv_write_t *req, int status) {
  write_request *w = (write_request *)req;
  (void)status; /* a failed write shows up as the worker's exit */
  lmp__shield_sigpipe(-1);
  free(w->data);
  if (w->L) luaL_unref(w->L, LUA_REGISTRYINDEX, w->pin);
  free(w);
}

/* Writes bytes that are ours (copied if the channel cannot take them at
 * once). Returns 0, or a libuv error: a failed write shows up as the
 * worker's exit. */
static int write_bytes(worker_handle *c, const char *data, size_t len) {
  uv_stream_t *stream = (uv_stream_t *)&c->channel;
  uv_buf_t buf;
  write_request *w;
  int r;
  if (uv_stream_get_write_queue_size(stream) == 0) {
    buf = uv_buf_init((char *)data, (unsigned int)len);
    lmp__shield_sigpipe(1);
    r = uv_try_write(stream, &buf, 1);
    lmp__shield_sigpipe(-1);
    if (r < 0 && r != UV_EAGAIN) return r;
    if (r > 0) {
      data += r;
      len -= (size_t)r;
    }
  }
  if (len == 0) return 0;
  w = calloc(1, sizeof *w);
  if (w == NULL || (w->data = malloc(len)) == NULL) {
    free(w);
    return UV_ENOMEM;
  }
  memcpy(w->data, data, len);
  buf = uv_buf_init(w->data, (unsigned int)len);
  return queue_write(w, stream, &buf, 1);
}

static int queue_write(write_request *w, uv_stream_t *stream, const uv_buf_t *bufs,
                       unsigned int nbufs) {
  int r;
  lmp__shield_sigpipe(1);
  r = uv_write(&w->req, stream, bufs, nbufs, on_written);
  if (r != 0) on_written(&w->req, r);
  return r;
}

/* A payload this small is copied into the frame: one buffer, one write. */
#define COPY_PAYLOAD_MAX 65536

/* Drops the first `n` bytes of bufs; returns how many buffers are left,
 * moved to the front. */
static size_t skip_written(uv_buf_t *bufs, size_t count, size_t n) {
  size_t i = 0, j;
  while (i < count && n >= bufs[i].len) n -= bufs[i++].len;
  if (i < count) {
    bufs[i].base += n;
    bufs[i].len -= (unsigned int)n;
  }
  for (j = 0; i + j < count; j++) bufs[j] = bufs[i + j];
  return j;
}

/* ---- descriptors sent with a frame ------------------------------------ */

/* Puts the descriptors of the message, then the payload's, in `all`.
 * Returns whether there are any, or -1 when there are too many. */
static int gather_descriptors(lmp_descriptors *all, const lmp_descriptors *message,
                              const lmp_payload *payload) {
  const lmp_descriptors *parts[2];
  int i, k;
  parts[0] = message;
  parts[1] = payload ? payload->descriptors : NULL;
  all->n = 0;
  for (k = 0; k < 2; k++) {
    if (parts[k] == NULL) continue;
    if (all->n + parts[k]->n > LMP_FRAME_DESCRIPTORS_MAX) return -1;
    for (i = 0; i < parts[k]->n; i++) all->fd[all->n++] = parts[k]->fd[i];
  }
  return all->n > 0;
}

/* uv_try_write, with the descriptors in the first bytes' control data
 * (sendmsg on the channel's socket, which libuv left idle: its write
 * queue is empty). Returns the bytes written or a libuv error. */
static int try_write_carrying(uv_stream_t *stream, const uv_buf_t *bufs, size_t nbufs,
                              const lmp_descriptors *all) {
  union {
    struct cmsghdr align;
    char bytes[CMSG_SPACE(LMP_FRAME_DESCRIPTORS_MAX * sizeof(int))];
  } control;
  struct iovec iov[IOV_MAX];
  struct msghdr msg;
  size_t i;
  uv_os_fd_t fd;
  ssize_t r;
  if (uv_fileno((uv_handle_t *)stream, &fd) != 0) return UV_EBADF;
  if (nbufs > IOV_MAX) nbufs = IOV_MAX;
  for (i = 0; i < nbufs; i++) {
    iov[i].iov_base = bufs[i].base;
    iov[i].iov_len = bufs[i].len;
  }
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = nbufs;
  lmp__set_descriptors(&msg, control.bytes, all);
  do {
    r = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
  return (int)r;
}

/* A write of one byte carrying one descriptor (libuv's uv_write2 sends
 * the descriptor of a handle: a pipe handle made for it). */
typedef struct descriptor_write {
  uv_write_t req;
  uv_pipe_t holder;
  char byte;
} descriptor_write;

static void free_descriptor_write(uv_handle_t *handle) {
  free(handle->data);
}

static void on_descriptor_written(uv_write_t *req, int status) {
  descriptor_write *w = (descriptor_write *)req;
  (void)status; /* a failed write shows up as the worker's exit */
  lmp__shield_sigpipe(-1);
  uv_close((uv_handle_t *)&w->holder, free_descriptor_write);
}

static int queue_descriptor(worker_handle *c, int fd, char byte) {
  descriptor_write *w = calloc(1, sizeof *w);
  uv_buf_t buf;
  int copy, r;
  if (w == NULL) return UV_ENOMEM;
  if ((copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
    free(w);
    return -errno;
  }
  if ((r = uv_pipe_init(c->channel.loop, &w->holder, 0)) != 0) {
    close(copy);
    free(w);
    return r;
  }
  w->holder.data = w;
  if ((r = uv_pipe_open(&w->holder, copy)) != 0) {
    close(copy);
    uv_close((uv_handle_t *)&w->holder, free_descriptor_write);
    return r;
  }
  w->byte = byte;
  buf = uv_buf_init(&w->byte, 1);
  lmp__shield_sigpipe(1);
  r = uv_write2(&w->req, (uv_stream_t *)&c->channel, &buf, 1, (uv_stream_t *)&w->holder,
                on_descriptor_written);
  if (r != 0) {
    lmp__shield_sigpipe(-1);
    uv_close((uv_handle_t *)&w->holder, free_descriptor_write);
  }
  return r;
}

/* Queues the first all->n bytes of the frame at `head`, each with one of
 * the descriptors, in order. */
static int queue_descriptors(worker_handle *c, const char *head, const lmp_descriptors *all) {
  int i, r;
  for (i = 0; i < all->n; i++)
    if ((r = queue_descriptor(c, all->fd[i], head[i])) != 0) return r;
  return 0;
}

/* Done with the buffer a frame was built in: the encode box at `box` goes
 * back for reuse; with box 0, b is the handle's task_frame, kept (unless
 * a big payload grew it). */
static void done_with(lua_State *L, lmp_buffer *b, int box) {
  if (box) {
    lmp__give_back_encode_box(L, box);
    return;
  }
  b->len = 0;
  if (b->cap > 65536) lmp__buffer_free(b);
}

/* Pushes the number of the frame just sent (1 for the first on the
 * channel): the worker's ring says how many it took (ring.h, taken), and
 * so whether it ever read this one. */
static void push_sent(lua_State *L, worker_handle *c) {
  lua_pushinteger(L, (lua_Integer)++c->frames_sent);
}

/* Sends the frame whose prefix and message b holds, the encode box at
 * `box` or (box 0) the handle's task_frame, with the payload at
 * `payload_idx` (NULL for none); pushes the frame's number (push_sent),
 * or false once the worker is gone or leaving. */
static int send_encoded(lua_State *L, worker_handle *c, lmp_buffer *b, int box, lmp_payload *payload,
                        int payload_idx, lmp_descriptors *message_fds) {
  uv_stream_t *stream = (uv_stream_t *)&c->channel;
  size_t payload_len = payload ? payload->length : 0, message_len, total, nbufs = 1;
  size_t written = 0, head_left;
  int copy = payload && payload->piece_count == 0 && payload_len <= COPY_PAYLOAD_MAX;
  lmp_descriptors carried;
  int carrying = gather_descriptors(&carried, message_fds, payload), sent_descriptors = 0;
  write_request *w;
  uv_buf_t few[8], *bufs = few;
  int r;
  message_len = b->len - LMP_FRAME_PREFIX;
  if (message_len > UINT32_MAX) return luaL_error(L, "lmp: a message over 4 GB cannot be sent");
  if (payload_len > UINT_MAX) return luaL_error(L, "lmp: a payload over 4 GB cannot be sent");
  if (carrying < 0 || (size_t)carried.n > b->len)
    return luaL_error(L, "lmp: a message carries at most %d descriptors", LMP_FRAME_DESCRIPTORS_MAX);
  if (copy && lmp__buffer_append(b, LMP_PAYLOAD_BYTES(payload), payload_len) != 0)
    return luaL_error(L, "lmp: not enough memory");
  if (c->exited || c->eof || c->input_closed || c->broken) {
    done_with(L, b, box);
    lua_pushboolean(L, 0);
    return 1;
  }
  lmp__frame_set_length(b->data, LMP_FRAME_PREFIX - LMP_FRAME_HEADER + message_len + payload_len);
  lmp__set_u32_at(b->data + LMP_FRAME_HEADER, (uint32_t)message_len);
  if (carrying)
    lmp__frame_set_descriptors(b->data, message_fds ? message_fds->n : 0,
                               payload && payload->descriptors ? payload->descriptors->n : 0);
  /* With a ring, a frame that fits and carries no descriptor goes there
   * (no system call unless the worker sleeps); any other is counted as
   * going on the socket, so that the worker reads the two in order. */
  if (c->ring != NULL) {
    uv_buf_t ring_bufs[8];
    size_t ring_n = 1;
    int fits = !carrying && !(payload && !copy && 2 * payload->piece_count + 2 > 8);
    if (fits) {
      ring_bufs[0] = uv_buf_init(b->data, (unsigned int)b->len);
      if (payload && !copy) ring_n += lmp__payload_bufs(payload, ring_bufs + 1);
    }
    int went = lmp__ring_send(c, ring_bufs, fits ? ring_n : 0, b->len + (copy ? 0 : payload_len),
                              !fits);
    if (went != 0) {
      done_with(L, b, box);
      if (went > 0) push_sent(L, c);
      else lua_pushboolean(L, 0);
      return 1;
    }
  }
  /* A frame with descriptors is never corked: they go with its first
   * byte, which must leave now, in order. */
  if (corked && !carrying && (copy || !payload)) {
    if (lmp__buffer_append(&c->outbox, b->data, b->len) != 0)
      return luaL_error(L, "lmp: not enough memory");
    if (!c->flush_pending) {
      c->flush_pending = 1;
      c->flush_next = flush_list;
      flush_list = c;
    }
    done_with(L, b, box);
    push_sent(L, c);
    return 1;
  }
  /* Frames corked earlier go first. */
  lmp__handle_unlist_flush(c);
  flush_outbox(c);
  if (payload && !copy && 2 * payload->piece_count + 2 > sizeof few / sizeof few[0])
    bufs = lua_newuserdatauv(L, (2 * payload->piece_count + 2) * sizeof *bufs, 0);
  bufs[0] = uv_buf_init(b->data, (unsigned int)b->len);
  if (payload && !copy) nbufs += lmp__payload_bufs(payload, bufs + 1);
  total = b->len + (copy ? 0 : payload_len);
  if (uv_stream_get_write_queue_size(stream) == 0) {
    lmp__shield_sigpipe(1);
    r = carrying ? try_write_carrying(stream, bufs, nbufs, &carried)
                 : uv_try_write(stream, bufs, (unsigned int)nbufs);
    lmp__shield_sigpipe(-1);
    if (r < 0 && r != UV_EAGAIN) {
      done_with(L, b, box);
      lua_pushboolean(L, 0);
      return 1;
    }
    if (r > 0) written = (size_t)r, sent_descriptors = 1;
  }
  if (carrying && !sent_descriptors && written < total) {
    /* The channel is full: the descriptors are queued behind what waits,
     * one with each of the frame's first bytes. */
    if ((r = queue_descriptors(c, b->data, &carried)) != 0) {
      lmp__handle_signal(c, SIGKILL); /* the frame is cut: the worker cannot go on */
      done_with(L, b, box);
      lua_pushboolean(L, 0);
      return 1;
    }
    written = (size_t)carried.n;
  }
  if (written == total) {
    done_with(L, b, box);
    push_sent(L, c);
    return 1;
  }
  /* The channel is full: queue the rest. The head is copied out of the
   * encode box, which goes back for reuse. */
  head_left = written < b->len ? b->len - written : 0;
  w = calloc(1, sizeof *w);
  if (w == NULL || (head_left && (w->data = malloc(head_left)) == NULL)) {
    free(w);
    return luaL_error(L, "lmp: not enough memory");
  }
  if (head_left) memcpy(w->data, b->data + written, head_left);
  nbufs = skip_written(bufs, nbufs, written);
  if (head_left) bufs[0] = uv_buf_init(w->data, (unsigned int)head_left);
  if (payload && !copy) {
    lua_pushvalue(L, payload_idx);
    w->pin = luaL_ref(L, LUA_REGISTRYINDEX);
    w->L = c->L;
  }
  done_with(L, b, box);
  /* libuv copies bufs, so `few` may go when this returns. */
  if (queue_write(w, stream, bufs, (unsigned int)nbufs) != 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  push_sent(L, c);
  return 1;
}

/* handle:send(message [, payload [, root]]) encodes everything before
 * writing anything, so a value that cannot be sent raises and leaves the
 * channel as it was. The frame is written at once when the channel takes
 * it (the usual case: no allocation, no callback); what it does not take
 * is queued on libuv with a copy of the frame's head, the payload pinned. */
int lmp__handle_send(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  lmp_payload *payload = lua_isnoneornil(L, 3) ? NULL : lmp__check_payload(L, 3);
  const char *root = luaL_optstring(L, 4, "");
  lmp_buffer *b;
  lmp_descriptors *message_fds, *previous;
  int r;
  luaL_checkany(L, 2);
  lua_settop(L, 4);
  b = lmp__take_encode_box(L);
  if (lmp__buffer_reserve(b, LMP_FRAME_PREFIX) != 0) return luaL_error(L, "lmp: not enough memory");
  b->len = LMP_FRAME_PREFIX;
  /* The descriptors the message's values hold (6), sent with it. */
  message_fds = lmp__take_descriptors(L);
  previous = lmp__descriptors_collect(message_fds);
  /* A message to a worker wraps the values it carries in levels of its own
   * ({"init", {initargs = {...}}}): they may nest as deep as dumps allows. */
  r = lmp__encode_message(L, 2, b, root, 0, LMP_ENVELOPE_DEPTH);
  lmp__descriptors_collect(previous);
  if (r != 0) return lua_error(L);
  r = send_encoded(L, c, b, 5, payload, 3, message_fds->n > 0 ? message_fds : NULL);
  lmp__give_back_descriptors(L, 6); /* closed: the worker has its own now */
  return r;
}

/* handle:send_task(id, function_id, mode, payload): handle:send of
 * {"task", id, function_id, false, mode, false, false}, the message of a
 * task whose function the worker has, written without making the table. */
int lmp__handle_send_task(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  lua_Integer id = luaL_checkinteger(L, 2), function_id = luaL_checkinteger(L, 3);
  const char *mode = luaL_checkstring(L, 4);
  lmp_payload *payload = lmp__check_payload_at(L, 5, lua_upvalueindex(2));
  lmp_buffer *b;
  int box = 0, r;
  lua_settop(L, 5);
  /* The handle's own buffer rather than an encode box (two registry round
   * trips fewer per task); it is the handle's to free should a step below
   * raise. A finalizer that runs while a frame is built there (the Lua
   * allocation of a long payload's buffer list can run one) and sends a
   * task on the same handle takes an encode box instead, as every task
   * does after a raise below left the mark (correct, only slower). */
  if (c->task_frame_busy) {
    b = lmp__take_encode_box(L);
    box = 6;
  } else {
    b = &c->task_frame;
    b->len = 0;
    c->task_frame_busy = 1;
  }
  if (lmp__buffer_reserve(b, LMP_FRAME_PREFIX) != 0) return luaL_error(L, "lmp: not enough memory");
  b->len = LMP_FRAME_PREFIX;
  lmp__encode_task_message(L, b, id, function_id, mode);
  r = send_encoded(L, c, b, box, payload, 5, NULL);
  if (box == 0) c->task_frame_busy = 0;
  return r;
}

/* handle:flush(): writes now the frames corked in the handle's outbox
 * while answers are handled, rather than after the last of them: the
 * next task of a worker that has nothing else to run leaves before the
 * answer that freed it is loaded. */
int lmp__handle_flush(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  lmp__handle_unlist_flush(c);
  flush_outbox(c);
  return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* handle:close_input(): the worker reads end-of-file after what was sent
 * and exits; the way a pool lets its workers go. */
int lmp__handle_close_input(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  uv_shutdown_t *req;
  if (c->input_closed || c->eof) return 0;
  lmp__handle_unlist_flush(c);
  flush_outbox(c); /* what was sent goes before the end */
  c->input_closed = 1;
  lmp__ring_count_end(c);
  req = malloc(sizeof *req);
  if (req == NULL) return luaL_error(L, "lmp: not enough memory");
  if (uv_shutdown(req, (uv_stream_t *)&c->channel, on_shutdown) != 0) free(req);
  return 0;
}


/* handle:open_ring() -> ring descriptor, wake-up descriptor: gives the
 * handle a ring (process_ring.c) and returns duplicates of the two
 * descriptors for the worker (the caller sends and closes them). Call
 * before the first frame. Raises on failure, with nothing changed. */
int lmp__handle_open_ring(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  int fd, wake, r;
  if (c->ring != NULL) return luaL_error(L, "lmp: the worker has a ring already");
  if ((r = lmp__ring_open(c, lmp__loop(L), &fd, &wake)) != 0)
    return luaL_error(L, "lmp: cannot make a ring: %s", uv_strerror(r));
  lua_pushinteger(L, fd);
  lua_pushinteger(L, wake);
  return 2;
}

/* handle:ring_counts() -> frames sent and received through the ring, or
 * nothing when the worker has none. */
int lmp__handle_ring_counts(lua_State *L) {
  worker_handle *c = lmp__check_handle(L);
  if (c->ring == NULL) return 0;
  lua_pushinteger(L, (lua_Integer)c->ring_frames_out);
  lua_pushinteger(L, (lua_Integer)c->ring_frames_in);
  return 2;
}
