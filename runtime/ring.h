/* The shared-memory ring of a worker's channel (ring.c): two
 * single-producer single-consumer byte rings in one MAP_SHARED memfd, one
 * each way, carrying the same frames as the socket (protocol.md). The
 * socket stays: frames with descriptors and frames too big for the ring
 * go on it, and its end of file is still how either side learns the
 * other is gone. Pure C; part of the transport layer; internal. */
#ifndef LMP_RING_H
#define LMP_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Bytes of frames each way; a frame bigger than a quarter of this goes on
 * the socket. */
#define LMP_RING_BYTES (256 * 1024)
#define LMP_RING_FRAME_MAX (LMP_RING_BYTES / 4)

/* One direction. The producer alone writes tail, socket_sent and seq; the
 * consumer alone writes head, taken and sleeping (the producer clears
 * sleeping when it wakes it). Positions count bytes since the start and
 * only grow. */
typedef struct lmp_ring_side {
  uint64_t head;        /* consumer: bytes taken */
  uint64_t taken;       /* consumer: frames it took, from the ring or the
                           socket, each counted as it is handed over, before
                           it is decoded: once the consumer is dead, the
                           frames beyond were never read */
  char gap1[48];        /* head and tail on their own cache lines */
  uint64_t tail;        /* producer: bytes published */
  uint64_t socket_sent; /* producer: frames it put on the socket, and its
                           end of file, counted before they are written */
  uint32_t seq;         /* the futex word: bumped whenever tail or
                           socket_sent moved */
  uint32_t sleeping;    /* the consumer is asleep (or about to be) */
  char gap2[40];
} lmp_ring_side;

typedef struct lmp_ring {
  lmp_ring_side to_worker, to_main;
} lmp_ring;

/* The whole mapping: the two sides on the first page, then each side's bytes. */
#define LMP_RING_MAP_SIZE (4096 + 2 * (size_t)LMP_RING_BYTES)
char *lmp__ring_data(lmp_ring *r, lmp_ring_side *s);

/* A memfd holding a zeroed ring, mapped at *ring. Returns the descriptor,
 * or -errno (nothing left open or mapped). */
int lmp__ring_create(lmp_ring **ring);
/* Maps the ring in fd (which stays the caller's). 0 or -errno. */
int lmp__ring_map(int fd, lmp_ring **ring);
void lmp__ring_unmap(lmp_ring *ring);

/* Producer: publishes one frame made of iov (total bytes), which must be
 * at most LMP_RING_FRAME_MAX, recording that socket_before frames went on
 * the socket before it. Returns 1 when it went and the consumer sleeps
 * (the caller wakes it: the flag is cleared), 0 when it went, -1 when the
 * ring has no room now (nothing written). */
int lmp__ring_push(lmp_ring *r, lmp_ring_side *s, const struct iovec *iov, int n, size_t total,
                   uint64_t socket_before);
/* Producer: one more frame (or the end of file) goes on the socket; to
 * call before writing it. Returns 1 when the consumer sleeps (wake it). */
int lmp__ring_count_socket(lmp_ring_side *s);

/* Consumer: the next frame, if there is one: 1 with *frame, *n (the frame
 * with its header) and *socket_before; 0 when the ring is empty; -1 when
 * the producer wrote garbage (lengths that do not fit). Wrap marks are
 * skipped. The frame stays in place until lmp__ring_pop. */
int lmp__ring_peek(lmp_ring *r, lmp_ring_side *s, const char **frame, size_t *n,
                   uint64_t *socket_before);
void lmp__ring_pop(lmp_ring_side *s, size_t n);
/* Consumer: whether a frame waits in the ring or socket frames beyond
 * socket_read were announced. */
int lmp__ring_ready(lmp_ring *r, lmp_ring_side *s, uint64_t socket_read);

/* Consumer, blocking (the worker): watches for ring_ready for spin_ns,
 * yielding the CPU between looks, then sleeps on the futex for at most
 * timeout_ns. Returns 1 when something is ready, 0 when the time ran out. */
int lmp__ring_wait(lmp_ring *r, lmp_ring_side *s, uint64_t socket_read, uint64_t spin_ns,
                   int64_t timeout_ns);
/* Producer: wakes a consumer asleep in lmp__ring_wait. */
void lmp__ring_wake(lmp_ring_side *s);

#endif
