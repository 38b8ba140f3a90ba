/* A worker's side of the ring beside its channel (ring.h; protocol.md,
 * "The ring"): frames come from the ring or the socket in the order the
 * main process sent them, by the count of socket frames each ring frame
 * records, and answers go into the ring when they fit. Blocking, as the
 * rest of the worker's channel (channel.c, which calls this). Part of the
 * transport layer; internal. */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "channel.h"
#include "ring.h"
#include "transport.h"

static lmp_ring *worker_ring;
static int ring_wake_fd = -1;
/* Frames read from and written to the socket, the end of file included. */
static uint64_t socket_frames_read, socket_frames_sent;
/* Frames taken from either, published in the ring (taken): should this
 * worker die, the main process runs elsewhere the tasks it never read. */
static uint64_t frames_taken;
/* The ring frame last returned: it is decoded where it lies, and popped
 * at the next call. */
static size_t ring_taken;
static int ring_frame_held;

/* How long a worker sleeps on its ring before it looks whether its main
 * process is gone (the socket's end of file wakes no futex). */
#define RING_CHECK_NS 100000000

int lmp__worker_ring_active(void) { return worker_ring != NULL; }

/* Whether this process may run on one CPU only (taskset, a container's
 * cpuset, a machine of one). Asked once: the answer is inherited, and a
 * worker changes it only if a task does. */
static int one_cpu(void) {
  static int answer = -1;
  if (answer < 0) {
    cpu_set_t cpus;
    answer = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) < 2;
  }
  return answer;
}

static void count_taken(void) {
  frames_taken++;
  if (worker_ring) __atomic_store_n(&worker_ring->to_worker.taken, frames_taken, __ATOMIC_RELEASE);
}

void lmp__worker_ring_socket_read(void) {
  socket_frames_read++;
  count_taken();
}

int lmp__worker_ring_next(const char **body, size_t *n) {
  lmp_ring_side *s = &worker_ring->to_worker;
  int checked = 0, yielded = 0;
  if (ring_frame_held) {
    lmp__ring_pop(s, ring_taken);
    ring_frame_held = 0;
  }
  for (;;) {
    const char *frame;
    size_t length;
    uint64_t before;
    int got = lmp__ring_peek(worker_ring, s, &frame, &length, &before);
    if (got < 0 || (got > 0 && (length < LMP_FRAME_HEADER ||
                                lmp__frame_length(frame) != length - LMP_FRAME_HEADER)))
      return -1;
    if (got > 0 && before <= socket_frames_read) {
      ring_taken = length;
      ring_frame_held = 1;
      count_taken();
      *body = frame + LMP_FRAME_HEADER;
      *n = length - LMP_FRAME_HEADER;
      return 1;
    }
    if (got > 0 || __atomic_load_n(&s->socket_sent, __ATOMIC_ACQUIRE) > socket_frames_read)
      return 0;
    /* On one CPU nobody can answer while this process watches, but the
     * main process it just answered is most likely ready to run: one
     * yield lets it take the answer and put the next task in the ring
     * while this worker is still awake, which costs one system call
     * where a sleep costs three (the futex wait here, and the main
     * process's look at the socket and futex wake). When the yield
     * finds nobody to run it returns at once, and the worker sleeps. */
    if (!yielded && one_cpu()) {
      sched_yield();
      yielded = 1;
      continue;
    }
    /* Watched for a while first, but not again after each look at the
     * socket: a worker asleep says so (sleeping) nearly all the time, so
     * that its death is looked for before a frame is put in its ring. */
    if (!lmp__ring_wait(worker_ring, s, socket_frames_read, checked ? 0 : lmp__spin_ns(),
                        RING_CHECK_NS)) {
      struct pollfd pfd;
      pfd.fd = LMP_CHANNEL_FD;
      pfd.events = POLLIN;
      /* Something on the socket that no count announced: its end. */
      if (poll(&pfd, 1, 0) > 0) return 0;
      checked = 1;
    }
  }
}

/* Whether the socket holds nothing the main process has not read yet.
 * A task may write on it behind lmp's back (bytes no count announces):
 * while any such bytes wait there, answers follow them on the socket,
 * so that the main process sees them in the order they were written,
 * as it would without a ring. Undecidable (the call failed): no. */
static int socket_drained(void) {
  int waiting = 0;
  return ioctl(LMP_CHANNEL_FD, SIOCOUTQ, &waiting) == 0 && waiting == 0;
}

int lmp__worker_ring_send(const struct iovec *iov, int n, size_t total, int carrying) {
  int woke = -1, went = 0;
  if (!carrying && socket_drained())
    woke = lmp__ring_push(worker_ring, &worker_ring->to_main, iov, n, total, socket_frames_sent);
  if (woke >= 0) {
    went = 1;
  } else {
    socket_frames_sent++;
    woke = lmp__ring_count_socket(&worker_ring->to_main);
  }
  if (woke == 1) {
    uint64_t one = 1;
    /* A main process that is gone reads nothing: the write may fail. */
    if (write(ring_wake_fd, &one, sizeof one) < 0) (void)0;
  }
  return went;
}

int lmp__core_ring_attach(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), wake = (int)luaL_checkinteger(L, 2), r;
  lmp_ring *ring;
  if (worker_ring != NULL) return luaL_error(L, "lmp: the worker has a ring already");
  if ((wake = fcntl(wake, F_DUPFD_CLOEXEC, 0)) < 0)
    return luaL_error(L, "lmp: cannot take the ring: %s", strerror(errno));
  if ((r = lmp__ring_map(fd, &ring)) != 0) {
    close(wake);
    return luaL_error(L, "lmp: cannot take the ring: %s", strerror(-r));
  }
  worker_ring = ring;
  ring_wake_fd = wake;
  /* The frames read before (the init that brought the ring). */
  __atomic_store_n(&ring->to_worker.taken, frames_taken, __ATOMIC_RELEASE);
  return 0;
}

void lmp__channel_forget_ring(void) {
  /* Unmapped: a child has no business with its parent's ring. */
  lmp__ring_unmap(worker_ring);
  worker_ring = NULL;
  ring_wake_fd = -1;
  ring_frame_held = 0;
  socket_frames_read = socket_frames_sent = frames_taken = 0;
}
