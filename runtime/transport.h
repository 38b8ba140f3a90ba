/* The layer of transports and OS objects: SIGPIPE shielding (sigpipe.c),
 * digests (digest.c), the resource tracker (tracker.c), the terminal
 * (terminal.c), shared memory (shared.c), futex-based locks (futex.c,
 * waiter.c, sync.c), feeders (feeder.c), the ring beside a worker's
 * channel (ring.c, ring.h; channel_ring.c, process_ring.c), worker
 * processes (process_send.c, process.c, spawn.c), servers (server.c),
 * descriptor watches and sentinels (watch.c) and Listener sockets
 * (listener.c).
 * The channel and the worker handle have their own headers
 * (channel.h, process.h). Internal; uses only the layers below it. */
#ifndef LMP_TRANSPORT_H
#define LMP_TRANSPORT_H

#include <sys/types.h>

#include "loop.h"

/* sigpipe.c: SIGPIPE keeps its default for the script and the programs
 * it starts; only lmp's own writes are shielded from it. Installs (once,
 * when SIGPIPE has its default) a handler that lets a SIGPIPE pass while
 * lmp__shield_sigpipe holds a shield up and otherwise does what the
 * default would have done. lmp__shield_sigpipe(+1) before a write lmp
 * makes through libuv (or queues on it), -1 once it is done. Writes lmp
 * makes itself use MSG_NOSIGNAL instead. */
int lmp__guard_sigpipe(void); /* 0, or -1 with errno */
void lmp__shield_sigpipe(int delta);

/* digest.c: SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104), random bytes,
 * and the challenge and answer that prove a key on a connection. */
#define LMP_SHA256_SIZE 32
typedef struct lmp_sha256 {
  uint32_t h[8];
  uint64_t length;  /* bytes hashed so far */
  unsigned char block[64];
  size_t used;      /* bytes of block filled */
} lmp_sha256;
void lmp__sha256_init(lmp_sha256 *s);
void lmp__sha256_update(lmp_sha256 *s, const void *data, size_t n);
/* Writes the digest and wipes the state. */
void lmp__sha256_final(lmp_sha256 *s, unsigned char digest[LMP_SHA256_SIZE]);
void lmp__hmac_sha256(const void *key, size_t key_len, const void *message, size_t n,
                      unsigned char mac[LMP_SHA256_SIZE]);
/* Fills out with n bytes of the kernel's generator. Returns 0 or -errno. */
int lmp__random_bytes(void *out, size_t n);
/* Whether the n bytes at a and b are equal, in a time that does not depend
 * on where they differ. */
int lmp__compare_digest(const void *a, const void *b, size_t n);

/* Blocking whole reads and writes on a socket, for the handshakes:
 * 0, or -1 at an error or the end of the stream (writes never raise
 * SIGPIPE). */
int lmp__read_exactly(int fd, void *out, size_t n);
int lmp__send_all(int fd, const void *data, size_t n);

/* The handshake on a connection, both sides proving the key without
 * sending it (as Python's multiprocessing.connection does):
 *   server: LMP_AUTH_GREETING (8 bytes) and a challenge (32 random bytes)
 *   client: HMAC(key, "lmp client" .. challenge)
 *   server: LMP_AUTH_WELCOME or LMP_AUTH_FAILURE (8 bytes; closes on failure)
 *   client: a challenge of its own (32 random bytes)
 *   server: HMAC(key, "lmp server" .. that challenge)
 * The client proves itself first, so the server never answers a challenge
 * for a peer without the key; the role labels keep one side's answer from
 * serving as the other's. */
#define LMP_AUTH_GREETING "LMPAUTH1"
#define LMP_AUTH_WELCOME "WELCOME!"
#define LMP_AUTH_FAILURE "FAILURE!"
#define LMP_AUTH_TAG_SIZE 8
#define LMP_AUTH_CHALLENGE_SIZE 32
/* Writes HMAC(key, role .. challenge) to answer. */
void lmp__auth_answer(const char *key, size_t key_len, const char *role,
                      const unsigned char challenge[LMP_AUTH_CHALLENGE_SIZE],
                      unsigned char answer[LMP_SHA256_SIZE]);
/* The client's side on a blocking descriptor. Returns 0 once both sides
 * proved the key; otherwise -1 with a message in why (a static string). */
int lmp__auth_client(int fd, const char *key, size_t key_len, const char **why);

/* close_from.c: closes every descriptor from `from` on (close_range, or
 * one by one where the kernel lacks it). For a child right after fork. */
void lmp__close_from(int from);
/* tracker.c: registers (add) or unregisters a name with this process's
 * resource tracker, made on first need. kind: 's' shared memory name, 'f'
 * file, 'd' directory. Returns 0 or -errno. */
int lmp__track(int add, char kind, const char *path);
void lmp__open_tracker(lua_State *L);
void lmp__open_terminal(lua_State *L);

/* futex.c: locks, semaphores, events and condition variables in memory
 * that several processes map MAP_SHARED (pure C, no Lua). A cell is
 * zeroed by lmp__sync_init before it is shared. seq is the futex word,
 * bumped on every change a waiter may be waiting for; a waiter reads it
 * (lmp__sync_seq), tries its operation, and if that fails sleeps with
 * lmp__sync_sleep until seq differs from what it read. */
typedef struct lmp_sync_cell {
  uint32_t seq;      /* the futex word */
  uint32_t sleepers; /* threads asleep on seq: a change wakes them */
  int32_t owner;     /* a lock's holder (pid), 0 when free */
  uint32_t depth;    /* how many times an RLock's holder holds it */
  int32_t value;     /* a semaphore's value; an event's flag */
  int32_t maximum;   /* a bounded semaphore's ceiling; -1 for none */
  uint64_t notices;  /* a condition's waiters and tickets; a barrier's state
                      * and count (futex.c) */
  uint32_t waiting;  /* processes and threads waiting for a lock: while
                      * none does, a release need not bump seq */
} lmp_sync_cell;
#define LMP_SYNC_ACQUIRED 1
#define LMP_SYNC_OWNER_DIED 2 /* acquired from a holder that died */
/* The futex calls on a shared word. wait: sleeps while *word == expected
 * (timeout_ns < 0: no limit); 0 when woken or the word differs, else
 * -ETIMEDOUT or -EINTR. wake: wakes up to n; returns how many, or -errno. */
int lmp__futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);
int lmp__futex_wake(uint32_t *word, int n);
void lmp__sync_init(lmp_sync_cell *c);
uint32_t lmp__sync_seq(lmp_sync_cell *c);
/* Sleeps until seq differs from seen or timeout_ns (>= 0; < 0 no limit)
 * passes, first watching seq for spin_ns without sleeping. Returns 1 when
 * the time ran out with seq unchanged, 0 otherwise (changed, woken, a
 * signal): the caller tries again either way. */
int lmp__sync_sleep(lmp_sync_cell *c, uint32_t seen, int64_t timeout_ns, uint64_t spin_ns);
/* Whether process pid runs (a zombie does not). */
int lmp__process_alive(int32_t pid);
/* Takes the lock for pid without waiting: LMP_SYNC_ACQUIRED, or
 * LMP_SYNC_OWNER_DIED when check_owner is set and the holder has died (the
 * lock passes to pid), or 0. A recursive lock its holder takes again
 * counts; a plain one is not taken twice (0). */
int lmp__lock_try(lmp_sync_cell *c, int32_t pid, int recursive, int check_owner);
/* Releases: a recursive lock only by its holder, a plain one by anyone
 * but only when held. 0, or -EPERM. */
int lmp__lock_release(lmp_sync_cell *c, int32_t pid, int recursive);
/* A waiter for a lock counts itself (delta 1) before it first reads seq
 * and tries, and uncounts itself (-1) once it stops waiting: a release
 * wakes only counted waiters. One that dies counted costs the lock its
 * shortcut (every release then bumps seq), never a wake-up. */
void lmp__lock_waiting(lmp_sync_cell *c, int delta);
/* Takes one from a semaphore's value if it is positive (1), else 0. */
int lmp__semaphore_try(lmp_sync_cell *c);
/* Adds one; -ERANGE at the ceiling of a bounded semaphore. */
int lmp__semaphore_release(lmp_sync_cell *c);
void lmp__event_set(lmp_sync_cell *c);
void lmp__event_clear(lmp_sync_cell *c);
/* A counter (lmp.Queue's values and unfinished tasks): adds delta to value
 * when the sum stays within 0 and maximum (maximum < 0: no ceiling; only
 * an increase is held to it), wakes the sleepers and gives the sum in
 * *after (if not NULL); else -ERANGE and nothing changes. */
int lmp__counter_add(lmp_sync_cell *c, int32_t delta, int32_t *after);
/* A condition's waiter registers (holding the condition's lock), then
 * takes a ticket when one is there (1) or sleeps; one that gives up
 * leaves, and gets 1 if it was notified all the same (a ticket is its).
 * notify gives up to n registered waiters a ticket; returns how many.
 * Tickets are anonymous: the notifier, still holding the lock, waits
 * until they are taken (tickets: how many are left), so that a waiter
 * registering after the notification cannot take one, as in Python. */
void lmp__condition_register(lmp_sync_cell *c);
int lmp__condition_take(lmp_sync_cell *c);
int lmp__condition_leave(lmp_sync_cell *c);
uint32_t lmp__condition_notify(lmp_sync_cell *c, uint32_t n);
uint32_t lmp__condition_tickets(lmp_sync_cell *c);
/* A barrier's cell, as Python's Barrier: parties enter while it is
 * filling (1, with their index; 0 while the round before drains or a
 * reset finishes; -1 when broken); the last to enter drains it (after its
 * action), the others wait until it is no longer filling; every party
 * leaves, and the last out makes it filling again. */
#define LMP_BARRIER_FILLING 0
#define LMP_BARRIER_DRAINING 1
#define LMP_BARRIER_RESETTING (-1)
#define LMP_BARRIER_BROKEN (-2)
int lmp__barrier_enter(lmp_sync_cell *c, uint32_t parties, uint32_t *index);
void lmp__barrier_drain(lmp_sync_cell *c);
void lmp__barrier_break(lmp_sync_cell *c);
void lmp__barrier_leave(lmp_sync_cell *c);
void lmp__barrier_reset(lmp_sync_cell *c);
/* The state, and the parties inside in count (if not NULL). */
int32_t lmp__barrier_state(lmp_sync_cell *c, uint32_t *count);
/* sync.c: Lua's side of the cells (core.sync_cell); waiter.c: the main
 * process's waits (sync.h is between the two). */
void lmp__open_sync(lua_State *L);

/* feeder.c: the feeders of lmp.Queue (see there). core.feeder. */
void lmp__open_feeder(lua_State *L);
/* Waits until this process's feeders have written what they hold (except
 * cancelled ones); runs at exit, and before a forked worker's _exit. */
void lmp__flush_feeders(void);
/* Ctrl-C: no feeder is waited for. */
void lmp__cancel_feeders(void);
/* Whether a feeder of this process still writes to fd, and takes it over
 * to close when done (then the caller must not close it). */
int lmp__feeder_adopt(int fd);

/* fd_passing.c: descriptors on a worker's channel (see protocol.md). The
 * descriptors that arrived on a channel and that no frame took yet, in
 * order: each frame takes as many as its header announces. */
typedef struct lmp_arrivals {
  int *fd;
  size_t count, room;
} lmp_arrivals;
struct msghdr;
/* Keeps fd (closed on failure, then -1). */
int lmp__arrivals_keep(lmp_arrivals *a, int fd);
/* Closes what is kept and frees the list. */
void lmp__arrivals_free(lmp_arrivals *a);
/* recvmsg (flags added to MSG_CMSG_CLOEXEC) keeping the descriptors that
 * come with the bytes; read() on what is not a socket. As read returns;
 * -1 with errno EPROTO when descriptors were lost (frames and descriptors
 * no longer match). */
ssize_t lmp__recv_keeping(lmp_arrivals *a, int fd, char *p, size_t n, int flags);
/* Pushes a box with the next `count` descriptors (the caller checked they
 * arrived), or nil and returns NULL for none. */
lmp_descriptors *lmp__arrivals_take(lua_State *L, lmp_arrivals *a, int count);
/* Puts pass's descriptors in msg's control data, at `room` (space for
 * LMP_FRAME_DESCRIPTORS_MAX). */
void lmp__set_descriptors(struct msghdr *msg, char *room, const lmp_descriptors *pass);
/* Decodes a frame body (its header just before it) with the descriptors
 * it announces, taken from a: pushes message and payload (nil for none),
 * closes what no value took. Raises when they did not arrive or the bytes
 * are malformed. */
void lmp__decode_frame_carrying(lua_State *L, const char *body, size_t n, lmp_arrivals *a);

/* process.c: kills and reaps every worker still running; returns how many.
 * Used on Ctrl-C. */
int lmp__kill_all_workers(void);
/* spawn.c: how a forked worker runs (the worker layer registers it when
 * lmp.core opens): given the Lua state it inherited and its parent's pid,
 * returns the exit status. Without it, a forked worker exits with 1. */
void lmp__on_forked_worker(int (*run)(lua_State *L, long parent));

/* spawn.c: puts the n descriptors of fds at from, from + 1, ... (clearing
 * close-on-exec) and closes every other one from `from` on.
 * Async-signal-safe, for a new child. */
void lmp__place_descriptors(const int *fds, int n, int from);
/* At most this many descriptors lmp__place_descriptors places beside the
 * first. Its callers place a worker's channel alone (an lmp.Process's
 * connections travel over the channel), and the forkserver (worker.c)
 * refuses a request that carries anything but that one descriptor. */
#define LMP_MAX_PASSED_FDS 32

/* Each binding file adds its functions to the lmp.core table on top. */
void lmp__open_process(lua_State *L);
void lmp__open_spawn(lua_State *L);
void lmp__open_forkserver(lua_State *L);
void lmp__open_shared(lua_State *L);
void lmp__open_server(lua_State *L);
/* watch.c: descriptor watches and polls, process sentinels (pidfds), and
 * frames of raw bytes (core.fd_watch, poll_fds, sentinel, write_bytes,
 * read_bytes). */
void lmp__open_watch(lua_State *L);
/* listener.c: the sockets of Listener and Client, with the server's side
 * of the handshake (core.listen_socket, accept_socket, connect_socket). */
void lmp__open_listener(lua_State *L);
/* mpi.c, in a build with MPI=1 only: core.mpi_*. */
void lmp__open_relay_mpi(lua_State *L);
void lmp__open_digest(lua_State *L);
void lmp__open_terminal(lua_State *L);

#endif
