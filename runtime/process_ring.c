/* The main process's side of a worker's ring (ring.h): frames to the
 * worker go into the ring when they fit and carry no descriptor, and the
 * worker's frames are taken from it without a system call while the
 * loop watches, before it sleeps, and when a worker rings the wake-up
 * (an eventfd every ring of this process shares, which a worker writes
 * only when this process is not watching). The loop never waits on the
 * ring: its turn drains what is there and goes on. Knows nothing of Lua:
 * process.c registers how a frame is delivered. Part of the transport
 * layer; internal. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "process.h"
#include "ring.h"

/* The handles whose worker has a ring, and what serves them all, per
 * process: a forked child's copies are its parent's (lmp__rings_forget_parent). */
static worker_handle *ring_handles;
static int wake_fd = -1;
static uv_poll_t *wake_watch;
static uv_prepare_t *before_sleep;
static uv_idle_t *no_sleep;
static long rings_owner;
/* What process.c registers (it sits above this file): handing a frame to
 * the handle's Lua callback, reporting garbage, and corking what the
 * callbacks send. */
static lmp_ring_delivery delivery;

void lmp__rings_deliver_with(const lmp_ring_delivery *d) { delivery = *d; }

/* Whether bytes wait on the worker's socket, unread. */
static int socket_holds_bytes(worker_handle *c) {
  uv_os_fd_t fd;
  int available = 0;
  if (uv_fileno((uv_handle_t *)&c->channel, &fd) != 0) return 0;
  return ioctl(fd, FIONREAD, &available) == 0 && available > 0;
}

/* Delivers the frames due; in_socket_frame: called while frames read
 * from the socket are being delivered (more of them may wait in the
 * inbox, not on the socket). */
static int drain(worker_handle *c, int in_socket_frame) {
  const char *frame;
  size_t n;
  uint64_t before;
  int delivered = 0, got;
  if (c->ring == NULL || c->ring_draining || delivery.deliver == NULL) return 0;
  c->ring_draining = 1;
  delivery.cork();
  while (c->ring != NULL && c->L != NULL && !c->broken &&
         (got = lmp__ring_peek(c->ring, &c->ring->to_main, &frame, &n, &before)) != 0) {
    if (got < 0) {
      delivery.broken(c, "garbage in the channel's ring");
      break;
    }
    /* A frame the worker put on the socket before this one goes first.
     * The worker wrote that frame whole before it published this one:
     * a socket with no byte left to read means the count lies (a frame
     * that would wait for ever). */
    if (before > c->ring_socket_delivered) {
      if (!in_socket_frame && !c->exited && !c->eof && !socket_holds_bytes(c))
        delivery.broken(c, "garbage in the channel's ring (a frame behind socket frames that "
                           "never came)");
      break;
    }
    /* The worker may write the ring while this process reads it: the
     * frame is copied out once, then checked and decoded from the copy,
     * so that no length is read twice or believed unchecked. */
    c->ring_copy.len = 0;
    if (lmp__buffer_append(&c->ring_copy, frame, n) != 0) {
      delivery.broken(c, "not enough memory for a frame of the channel's ring");
      break;
    }
    lmp__ring_pop(&c->ring->to_main, n);
    c->ring_frames_in++;
    c->ring_last_in = uv_hrtime();
    delivered = 1;
    if (n < LMP_FRAME_HEADER || lmp__frame_length(c->ring_copy.data) != n - LMP_FRAME_HEADER) {
      delivery.broken(c, "garbage in the channel's ring");
      break;
    }
    delivery.deliver(c, c->ring_copy.data + LMP_FRAME_HEADER, n - LMP_FRAME_HEADER);
  }
  delivery.uncork();
  c->ring_draining = 0;
  return delivered;
}

int lmp__ring_drain(worker_handle *c) { return drain(c, 0); }

void lmp__ring_before_socket_frame(worker_handle *c) {
  if (c->ring == NULL) return;
  drain(c, 1);
  c->ring_socket_delivered++;
}

/* Bumped whenever a handle leaves the list: a delivery runs Lua, whose
 * collector may free another handle, so a walk starts again after one. */
static unsigned list_changes;

static int drain_all(void) {
  worker_handle *c;
  int delivered = 0;
  unsigned seen;
again:
  seen = list_changes;
  for (c = ring_handles; c; c = c->ring_next) {
    delivered |= drain(c, 0);
    if (list_changes != seen) goto again;
  }
  return delivered;
}

static void set_sleeping(uint32_t value) {
  worker_handle *c;
  for (c = ring_handles; c; c = c->ring_next)
    __atomic_store_n(&c->ring->to_main.sleeping, value, __ATOMIC_SEQ_CST);
}

/* Whether a worker's frame waits in a ring: the loop's spin watches this
 * beside its backend. */
static int rings_ready(void) {
  worker_handle *c;
  for (c = ring_handles; c; c = c->ring_next) {
    const char *frame;
    size_t n;
    uint64_t before;
    if (c->L == NULL || c->broken) continue;
    if (__atomic_load_n(&c->ring->to_main.tail, __ATOMIC_ACQUIRE) == c->ring->to_main.head) continue;
    /* One that waits behind a socket frame is not ready: the socket is. */
    if (lmp__ring_peek(c->ring, &c->ring->to_main, &frame, &n, &before) == 1 &&
        before <= c->ring_socket_delivered)
      return 1;
  }
  return 0;
}

/* The flag a worker reads is "ring the wake-up": set at all times but
 * while a blocking turn watches the rings (awake(1) before it watches,
 * awake(0) after), since the process may otherwise be anywhere (computing,
 * or sleeping in a loop that is not lmp's, as inside luv's). A worker
 * that rings it clears it, so one wake-up serves a burst of answers. */
static void awake(int watching) {
  set_sleeping(watching ? 0 : 1);
  /* A frame published while the flag was down rang nothing: the
   * process wakes itself for it. */
  if (!watching && rings_ready()) {
    uint64_t one = 1;
    if (write(wake_fd, &one, sizeof one) < 0) (void)0; /* full: it is readable anyway */
  }
}

static void on_no_sleep(uv_idle_t *idle) { uv_idle_stop(idle); }

/* Right before the loop polls: takes what is there, announces the sleep,
 * and looks once more (a frame published between the two looks did not
 * see the announcement). When something was delivered the poll must not
 * sleep: what it resolved is for the caller to see now. */
static void on_before_sleep(uv_prepare_t *prepare) {
  int delivered;
  (void)prepare;
  delivered = drain_all();
  set_sleeping(1);
  delivered |= drain_all();
  if (delivered) uv_idle_start(no_sleep, on_no_sleep);
}

static void on_wake(uv_poll_t *watch, int status, int events) {
  uint64_t count;
  (void)watch, (void)status, (void)events;
  while (read(wake_fd, &count, sizeof count) < 0 && errno == EINTR) continue;
  drain_all();
  /* The worker that rang took its flag down: up again for the next. */
  awake(0);
}

static void on_closed(uv_handle_t *handle) { free(handle); }

static void free_serving(void) {
  free(wake_watch);
  free(before_sleep);
  free(no_sleep);
  wake_watch = NULL;
  before_sleep = NULL;
  no_sleep = NULL;
}

/* Closes the wake-up descriptor and the handles that serve it; the
 * handles are freed in their close callbacks. */
static void close_wake_handles(void) {
  uv_close((uv_handle_t *)wake_watch, on_closed);
  uv_close((uv_handle_t *)before_sleep, on_closed);
  uv_close((uv_handle_t *)no_sleep, on_closed);
  wake_watch = NULL;
  before_sleep = NULL;
  no_sleep = NULL;
  close(wake_fd);
  wake_fd = -1;
}

/* The shared wake-up and the loop's hooks, made once per process. The
 * prepare and idle inits cannot fail (libuv only fills the handle); the
 * poll's can, and nothing is started before it succeeded. */
static int start_serving(uv_loop_t *loop) {
  int r;
  if (rings_owner == (long)getpid() && wake_fd >= 0) return 0;
  wake_watch = calloc(1, sizeof *wake_watch);
  before_sleep = calloc(1, sizeof *before_sleep);
  no_sleep = calloc(1, sizeof *no_sleep);
  if (wake_watch == NULL || before_sleep == NULL || no_sleep == NULL) {
    free_serving();
    return UV_ENOMEM;
  }
  if ((wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
    r = uv_translate_sys_error(errno);
    free_serving();
    return r;
  }
  if ((r = uv_poll_init(loop, wake_watch, wake_fd)) != 0) {
    close(wake_fd);
    wake_fd = -1;
    free_serving();
    return r;
  }
  uv_prepare_init(loop, before_sleep);
  uv_idle_init(loop, no_sleep);
  if ((r = uv_poll_start(wake_watch, UV_READABLE, on_wake)) != 0 ||
      (r = uv_prepare_start(before_sleep, on_before_sleep)) != 0) {
    close_wake_handles();
    return r;
  }
  /* They serve the workers; they are no reason for the loop to go on. */
  uv_unref((uv_handle_t *)wake_watch);
  uv_unref((uv_handle_t *)before_sleep);
  uv_unref((uv_handle_t *)no_sleep);
  lmp__loop_watch_rings(rings_ready, drain_all, awake);
  rings_owner = (long)getpid();
  return 0;
}

int lmp__ring_open(worker_handle *c, uv_loop_t *loop, int *ring_fd, int *wake) {
  lmp_ring *ring;
  int fd, r;
  if (c->ring != NULL) return UV_EEXIST;
  if ((r = start_serving(loop)) != 0) return r;
  if ((fd = lmp__ring_create(&ring)) < 0) return uv_translate_sys_error(-fd);
  if ((*wake = fcntl(wake_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
    r = uv_translate_sys_error(errno);
    close(fd);
    lmp__ring_unmap(ring);
    return r;
  }
  *ring_fd = fd;
  c->ring = ring;
  c->ring_socket_delivered = 0;
  ring->to_main.sleeping = 1; /* nobody watches it yet */
  /* Nor on the worker's side: a worker killed before it first waits on
   * its ring is looked at before a frame is put there. */
  ring->to_worker.sleeping = 1;
  c->ring_prev = NULL;
  c->ring_next = ring_handles;
  if (ring_handles) ring_handles->ring_prev = c;
  ring_handles = c;
  return 0;
}

/* Whether the worker's end of the socket is closed: a worker that was
 * killed while it slept left no trace in the ring, and a frame put there
 * would be lost where a write on the socket fails at once. */
static int worker_gone(worker_handle *c) {
  struct pollfd pfd;
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->channel, &fd) != 0) return 1;
  pfd.fd = fd;
  pfd.events = POLLRDHUP;
  return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* How long after its last frame an idle worker may still be watching its
 * ring (LMP_SPIN_US, stretched by a loaded machine's scheduling). */
#define RING_WATCH_NS 1000000

/* Whether the worker's socket is worth a look before a frame goes in its
 * ring: a worker asleep on its ring, or done with all it was sent and
 * silent for a while, may have died meanwhile, which a write on the
 * socket would find at once. One that answered a moment ago or still has
 * frames to take was alive then, and one that dies now loses the frame as
 * it would lose one written on the socket. The look is a system call,
 * saved on the quick round trips the ring is for. */
static int worker_may_be_gone(worker_handle *c) {
  lmp_ring_side *s = &c->ring->to_worker;
  if (__atomic_load_n(&s->sleeping, __ATOMIC_SEQ_CST)) return 1;
  if (__atomic_load_n(&s->head, __ATOMIC_ACQUIRE) != s->tail) return 0;
  return uv_hrtime() - c->ring_last_in > RING_WATCH_NS;
}

int lmp__ring_send(worker_handle *c, const uv_buf_t *bufs, size_t nbufs, size_t total, int carrying) {
  struct iovec iov[16];
  size_t i;
  int r;
  if (c->ring == NULL) return 0;
  if (worker_may_be_gone(c) && worker_gone(c)) return -1;
  if (!carrying && total <= LMP_RING_FRAME_MAX && nbufs <= 16) {
    for (i = 0; i < nbufs; i++) {
      iov[i].iov_base = bufs[i].base;
      iov[i].iov_len = bufs[i].len;
    }
    r = lmp__ring_push(c->ring, &c->ring->to_worker, iov, (int)nbufs, total, c->ring->to_worker.socket_sent);
    if (r == 1) lmp__ring_wake(&c->ring->to_worker);
    if (r >= 0) {
      c->ring_frames_out++;
      return 1;
    }
  }
  if (lmp__ring_count_socket(&c->ring->to_worker)) lmp__ring_wake(&c->ring->to_worker);
  return 0;
}

int64_t lmp__ring_taken(worker_handle *c) {
  return (int64_t)__atomic_load_n(&c->ring->to_worker.taken, __ATOMIC_ACQUIRE);
}

void lmp__ring_count_end(worker_handle *c) {
  if (c->ring && lmp__ring_count_socket(&c->ring->to_worker)) lmp__ring_wake(&c->ring->to_worker);
}

/* The last ring gone: the wake-up and the hooks go too, so that a loop
 * (a host's) can be closed once lmp's work on it is done. */
static void stop_serving(void) {
  if (rings_owner != (long)getpid() || wake_fd < 0) return;
  lmp__loop_watch_rings(NULL, NULL, NULL);
  close_wake_handles();
  rings_owner = 0;
}

void lmp__ring_release(worker_handle *c) {
  if (c->ring == NULL) return;
  if (c->ring_prev) c->ring_prev->ring_next = c->ring_next;
  else if (ring_handles == c) ring_handles = c->ring_next;
  if (c->ring_next) c->ring_next->ring_prev = c->ring_prev;
  c->ring_next = c->ring_prev = NULL;
  lmp__ring_unmap(c->ring);
  c->ring = NULL;
  list_changes++;
  if (ring_handles == NULL) stop_serving();
}

void lmp__rings_forget_parent(void) {
  worker_handle *c;
  /* The parent's rings and loop handles are its own: its rings are
   * unmapped here (a worker has no business with its siblings'), the
   * handles' memory stays as it was copied. */
  for (c = ring_handles; c; c = c->ring_next) {
    lmp__ring_unmap(c->ring);
    c->ring = NULL;
  }
  ring_handles = NULL;
  wake_fd = -1;
  wake_watch = NULL;
  before_sleep = NULL;
  no_sleep = NULL;
  rings_owner = 0;
}
