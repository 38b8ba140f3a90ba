/* The layer of transports and OS objects: SIGPIPE shielding (sigpipe.c),
 * digests (digest.c), the resource tracker (tracker.c), the terminal
 * (terminal.c), shared memory (shared.c), feeders (feeder.c), worker
 * processes (process_send.c, process.c, spawn.c) and servers (server.c).
 * The channel and the worker process handle have their own headers
 * (channel.h, process.h). Internal; uses only the layers below it. */
#ifndef LMP_TRANSPORT_H
#define LMP_TRANSPORT_H

#include "loop.h"

/* sigpipe.c: SIGPIPE keeps its default for the script and the programs
 * it starts; only lmp's own writes are shielded from it. Installs (once,
 * when SIGPIPE has its default) a handler that lets a SIGPIPE pass while
 * lmp__shield_sigpipe holds a shield up and otherwise does what the
 * default would have done. lmp__shield_sigpipe(+1) before a write lmp
 * makes through libuv (or queues on it), -1 once it is done. Writes lmp
 * makes itself use MSG_NOSIGNAL instead. */
void lmp__guard_sigpipe(void);
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

/* tracker.c: registers (add) or unregisters a name with this process's
 * resource tracker, made on first need. kind: 's' shared memory name, 'f'
 * file, 'd' directory. Returns 0 or -errno. */
int lmp__track(int add, char kind, const char *path);
void lmp__open_tracker(lua_State *L);
void lmp__open_terminal(lua_State *L);

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

/* process.c: kills and reaps every worker still running; returns how many.
 * Used on Ctrl-C. */
int lmp__kill_all_workers(void);
/* spawn.c: how a forked worker runs (the worker layer registers it when
 * lmp.core opens): given the Lua state it inherited and its parent's pid,
 * returns the exit status. Without it, a forked worker exits with 1. */
void lmp__on_forked_worker(int (*run)(lua_State *L, long parent));

/* Each binding file adds its functions to the lmp.core table on top. */
void lmp__open_process(lua_State *L);
void lmp__open_spawn(lua_State *L);
void lmp__open_shared(lua_State *L);
void lmp__open_server(lua_State *L);
/* mpi.c, in a build with MPI=1 only: core.mpi_*. */
void lmp__open_relay_mpi(lua_State *L);
void lmp__open_digest(lua_State *L);
void lmp__open_terminal(lua_State *L);

#endif
