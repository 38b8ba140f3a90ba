/* The shared-memory ring of a worker's channel (see ring.h). Each entry
 * is a 16-byte head (the frame's length, a kind, and how many frames its
 * producer had put on the socket before it) and the frame, padded to 16
 * bytes; an entry that would run past the end leaves a wrap mark and
 * starts again at 0, so that every frame is contiguous and is decoded
 * where it lies. Publishing is a release store of tail; the futex word
 * seq is bumped after it, and the consumer's sleeping flag is read after
 * that (all sequentially consistent), so a consumer that announced its
 * sleep before looking at the ring is always seen and woken. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"
#include "transport.h"

#define SC __ATOMIC_SEQ_CST
#define ENTRY_HEAD 16
#define KIND_FRAME 1u
#define KIND_WRAP 2u

static size_t padded(size_t n) { return (n + 15) & ~(size_t)15; }

char *lmp__ring_data(lmp_ring *r, lmp_ring_side *s) {
  return (char *)r + 4096 + (s == &r->to_main ? LMP_RING_BYTES : 0);
}

int lmp__ring_create(lmp_ring **ring) {
  int fd = memfd_create("lmp-ring", MFD_CLOEXEC), r;
  if (fd < 0) return -errno;
  r = ftruncate(fd, (off_t)LMP_RING_MAP_SIZE) != 0 ? -errno : lmp__ring_map(fd, ring);
  if (r != 0) {
    close(fd);
    return r;
  }
  return fd;
}

int lmp__ring_map(int fd, lmp_ring **ring) {
  void *p = mmap(NULL, LMP_RING_MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return -errno;
  *ring = p;
  return 0;
}

void lmp__ring_unmap(lmp_ring *ring) {
  if (ring) munmap(ring, LMP_RING_MAP_SIZE);
}

static void put_head(char *at, uint32_t length, uint32_t kind, uint64_t socket_before) {
  memcpy(at, &length, 4);
  memcpy(at + 4, &kind, 4);
  memcpy(at + 8, &socket_before, 8);
}

int lmp__ring_push(lmp_ring *r, lmp_ring_side *s, const struct iovec *iov, int n, size_t total,
                   uint64_t socket_before) {
  uint64_t tail = s->tail, head = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
  size_t at = (size_t)(tail % LMP_RING_BYTES), need = ENTRY_HEAD + padded(total), skip = 0;
  char *data = lmp__ring_data(r, s), *p;
  int i;
  if (total > LMP_RING_FRAME_MAX) return -1;
  if (at + need > LMP_RING_BYTES) skip = LMP_RING_BYTES - at;
  if (tail - head + skip + need > LMP_RING_BYTES) return -1;
  if (skip) {
    put_head(data + at, 0, KIND_WRAP, 0);
    at = 0;
  }
  p = data + at + ENTRY_HEAD;
  for (i = 0; i < n; i++) {
    memcpy(p, iov[i].iov_base, iov[i].iov_len);
    p += iov[i].iov_len;
  }
  put_head(data + at, (uint32_t)total, KIND_FRAME, socket_before);
  __atomic_store_n(&s->tail, tail + skip + need, __ATOMIC_RELEASE);
  __atomic_add_fetch(&s->seq, 1, SC);
  if (__atomic_load_n(&s->sleeping, SC)) return __atomic_exchange_n(&s->sleeping, 0, SC) ? 1 : 0;
  return 0;
}

int lmp__ring_count_socket(lmp_ring_side *s) {
  __atomic_add_fetch(&s->socket_sent, 1, SC);
  __atomic_add_fetch(&s->seq, 1, SC);
  if (__atomic_load_n(&s->sleeping, SC)) return __atomic_exchange_n(&s->sleeping, 0, SC) ? 1 : 0;
  return 0;
}

int lmp__ring_peek(lmp_ring *r, lmp_ring_side *s, const char **frame, size_t *n,
                   uint64_t *socket_before) {
  char *data = lmp__ring_data(r, s);
  /* A wrap mark leads to 0, where no second one belongs: a loop of them
   * is garbage, not a reason to spin. */
  for (int wraps = 0;; wraps++) {
    uint64_t head = __atomic_load_n(&s->head, __ATOMIC_RELAXED),
             tail = __atomic_load_n(&s->tail, __ATOMIC_ACQUIRE);
    size_t at = (size_t)(head % LMP_RING_BYTES);
    uint32_t length, kind;
    if (head == tail) return 0;
    /* The other side may be anything, and may write while this reads:
     * every word is read once (an atomic load the compiler cannot repeat)
     * and checked against what it published before it is believed. */
    if (tail - head > LMP_RING_BYTES || at % ENTRY_HEAD != 0) return -1;
    length = __atomic_load_n((uint32_t *)(void *)(data + at), __ATOMIC_RELAXED);
    kind = __atomic_load_n((uint32_t *)(void *)(data + at + 4), __ATOMIC_RELAXED);
    if (kind == KIND_WRAP) {
      if (wraps > 0 || tail - head < LMP_RING_BYTES - at) return -1;
      __atomic_store_n(&s->head, head + (LMP_RING_BYTES - at), __ATOMIC_RELEASE);
      continue;
    }
    if (kind != KIND_FRAME || length > LMP_RING_FRAME_MAX ||
        at + ENTRY_HEAD + padded(length) > LMP_RING_BYTES ||
        ENTRY_HEAD + padded(length) > tail - head)
      return -1;
    *socket_before = __atomic_load_n((uint64_t *)(void *)(data + at + 8), __ATOMIC_RELAXED);
    *frame = data + at + ENTRY_HEAD;
    *n = length;
    return 1;
  }
}

void lmp__ring_pop(lmp_ring_side *s, size_t n) {
  uint64_t head = __atomic_load_n(&s->head, __ATOMIC_RELAXED);
  __atomic_store_n(&s->head, head + ENTRY_HEAD + padded(n), __ATOMIC_RELEASE);
}

int lmp__ring_ready(lmp_ring *r, lmp_ring_side *s, uint64_t socket_read) {
  (void)r;
  return __atomic_load_n(&s->tail, __ATOMIC_ACQUIRE) != s->head ||
         __atomic_load_n(&s->socket_sent, __ATOMIC_ACQUIRE) != socket_read;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int lmp__ring_wait(lmp_ring *r, lmp_ring_side *s, uint64_t socket_read, uint64_t spin_ns,
                   int64_t timeout_ns) {
  uint64_t deadline;
  uint32_t seen;
  int ready;
  if (lmp__ring_ready(r, s, socket_read)) return 1;
  if (spin_ns > 0) {
    deadline = now_ns() + spin_ns;
    /* A few plain looks first: a quick answer is often there within a
     * microsecond, and a yield costs a system call. */
    for (int i = 0; i < 64; i++)
      if (lmp__ring_ready(r, s, socket_read)) return 1;
    while (now_ns() < deadline) {
      if (lmp__ring_ready(r, s, socket_read)) return 1;
      sched_yield();
    }
  }
  __atomic_store_n(&s->sleeping, 1, SC);
  seen = __atomic_load_n(&s->seq, SC);
  if (lmp__ring_ready(r, s, socket_read)) {
    __atomic_store_n(&s->sleeping, 0, SC);
    return 1;
  }
  lmp__futex_wait(&s->seq, seen, timeout_ns);
  __atomic_store_n(&s->sleeping, 0, SC);
  ready = lmp__ring_ready(r, s, socket_read);
  return ready;
}

void lmp__ring_wake(lmp_ring_side *s) { lmp__futex_wake(&s->seq, 1); }
