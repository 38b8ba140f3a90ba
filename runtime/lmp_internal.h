/* Declarations shared by the runtime's files; not part of the public API. */
#ifndef LMP_INTERNAL_H
#define LMP_INTERNAL_H

#include <lua.h>
#include <lauxlib.h>

#include <uv.h>

#include <stdint.h>

#include "buffer.h"

#if defined(__GNUC__)
#define LMP_NORETURN __attribute__((noreturn))
#else
#define LMP_NORETURN
#endif

/* value.c: the value format (see value_format.md). */
#define LMP_FORMAT_VERSION 1
#define LMP_MAX_DEPTH 200
/* The levels a message may wrap around the values it carries (an
 * lmp.Process message: {"process", target, args}; a pool worker's start:
 * {"init", {initargs = {...}}}). A user's value may nest LMP_MAX_DEPTH
 * deep on every path, as lmp.dumps allows: encoders of messages allow
 * these levels more, and so does the decoder of messages (lmp__decode),
 * while lmp.loads keeps to LMP_MAX_DEPTH. */
#define LMP_ENVELOPE_DEPTH 3

/* Appends the encoding of the value at `idx` to `out`. Returns 0 on success.
 * A value that cannot be sent makes it return -1 with an lmp.Error (kind
 * "serialize") pushed, its message naming `root` plus the path to the
 * value. May raise Lua errors (out of memory, an erring __lmp_serialize),
 * so `out` must be owned by something the unwind does not leak. */
int lmp__encode(lua_State *L, int idx, lmp_buffer *out, const char *root);
/* The same, but strings of LMP_LONG_STRING bytes or more are left out of
 * `out`: their offset in it and the string go to the table at `pieces`
 * (offset, string, offset, string, ...), for the caller to join them in
 * with a single copy. The slot at `pieces` holds nil until the first such
 * string, when the encoder puts a new table there. */
#define LMP_LONG_STRING 65536
int lmp__encode_pieces(lua_State *L, int idx, lmp_buffer *out, const char *root,
                       int pieces);
/* As lmp__encode_pieces (`pieces` may be 0: none kept out), for a message
 * whose first `envelope` levels (at most LMP_ENVELOPE_DEPTH) wrap the
 * values it carries: those may nest LMP_MAX_DEPTH deep below them. */
int lmp__encode_message(lua_State *L, int idx, lmp_buffer *out, const char *root,
                        int pieces, int envelope);
/* Encodes the list t[first .. first + count - 1] (t at `idx`) as the table
 * {n = count, ...} of those values, without making that table: how a
 * task's arguments travel. Refusals name the item as root[name_first + k]
 * for the k-th item (from 0). Otherwise as lmp__encode_pieces. */
int lmp__encode_list(lua_State *L, int idx, lua_Integer first, lua_Integer count,
                     lua_Integer name_first, lmp_buffer *out, const char *root, int pieces);
/* Appends the message a worker gets for a task whose function it has:
 * the bytes lmp__encode makes of {"task", id, function_id, false, mode,
 * false, false}, without making that table (one per task otherwise). */
void lmp__encode_task_message(lua_State *L, lmp_buffer *out, lua_Integer id,
                              lua_Integer function_id, const char *mode);
/* Decodes bytes made by lmp__encode_list straight into the table at dst:
 * dst[first + k] = item k (from 0), without making the list. Returns 0,
 * having done nothing, when the bytes are not a list of `count` items (the
 * caller then decodes them as a value). Malformed bytes raise. */
int lmp__decode_list_into(lua_State *L, const char *p, size_t n, int dst,
                          lua_Integer first, lua_Integer count);
/* Decodes the n bytes at p, a message (nesting up to LMP_MAX_DEPTH +
 * LMP_ENVELOPE_DEPTH levels), and pushes the value. Malformed bytes raise
 * a Lua error; nothing is allocated beyond what the bytes can justify. */
void lmp__decode(lua_State *L, const char *p, size_t n);
/* The same, for bytes not trusted: with LMP_DECODE_DATA in flags, what
 * could run code in this process (a function, a value sent by name, which
 * may require a module, a value made by a registered constructor, the
 * globals table) is refused with an error instead of loaded; with
 * LMP_DECODE_NO_METATABLES, metatables are refused too. Nesting is
 * limited to LMP_MAX_DEPTH levels, as lmp.loads limits it. */
#define LMP_DECODE_DATA 1
#define LMP_DECODE_NO_METATABLES 2
void lmp__decode_with(lua_State *L, const char *p, size_t n, int flags);
/* As lmp__decode_with, `envelope` (at most LMP_ENVELOPE_DEPTH) levels
 * more allowed: for what lmp__encode_message made with as many. */
void lmp__decode_enveloped(lua_State *L, const char *p, size_t n, int flags, int envelope);

/* names.c: C functions and module tables travel by name. */
/* Pushes the map value -> name record, rebuilt when package.loaded changed
 * or when `rebuild` is set. */
void lmp__names_push_map(lua_State *L, int rebuild);
/* Pushes the value a name record stands for in this process, or raises. */
void lmp__names_resolve(lua_State *L, const char *record, size_t len);
/* Gives `value` (at idx) the name `name` in this process. */
void lmp__names_register(lua_State *L, const char *name, int idx);
/* Pushes the value registered under `name`, or nil. */
void lmp__names_push_registered(lua_State *L, const char *name);
/* Pushes the constructor registered under `name`, or raises; while names
 * are lenient (a worker reading its channel), pushes instead a function
 * that records the missing name and returns a placeholder. */
void lmp__names_push_constructor(lua_State *L, const char *name);
/* The placeholder's metatable: what a worker decodes in place of a name
 * it does not know while names are lenient (core.lenient_names). */
#define LMP_MISSING_NAME_META "lmp.MissingName"
/* Watches package.loaded for new modules (idempotent): lmp__names_push_map
 * learns that its map is stale, and lmp__loop_luv_loaded runs when luv
 * arrives. */
void lmp__names_watch_loaded(lua_State *L);
/* Adds lenient_names and take_missing_names to the table on top. */
void lmp__open_names(lua_State *L);

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

/* error.c: error objects, tables with metatable "lmp.Error". */
#define LMP_ERROR_META "lmp.Error"
/* Pushes a new error object {kind=kind, message=message}. */
void lmp__push_error(lua_State *L, const char *kind, const char *message);
/* Creates the lmp.Error metatable if needed and pushes it. */
void lmp__push_error_meta(lua_State *L);
/* Raises a formatted message without a position prefix: the position
 * luaL_error would add is that of lmp's own wrapper, which tells the
 * reader nothing. */
LMP_NORETURN void lmp__raisef(lua_State *L, const char *format, ...);

/* core.c: the userdata at idx if its metatable is registry[key] (a light
 * userdata key: found without hashing a name, unlike luaL_checkudata,
 * which showed in profiles of calls made once per task), else NULL. */
void *lmp__to_class(lua_State *L, int idx, const void *key);

/* core.c: encode buffers. Takes the state's spare buffer (or makes one),
 * empty, boxed in a userdata with __gc pushed on the stack, so that an
 * error while encoding cannot leak it. Give it back when done with it: the
 * next encoding reuses its memory instead of allocating. A box not given
 * back (an error unwound past it) is simply collected. */
lmp_buffer *lmp__take_encode_box(lua_State *L);
void lmp__give_back_encode_box(lua_State *L, int idx);

/* core.c: an encoded value (core.encode), a userdata owned by Lua: a
 * header, its pieces, then its bytes. Its long strings (LMP_LONG_STRING
 * bytes or more) are not copied into the bytes: each piece says where one
 * goes, and a write takes it from the Lua string itself, which the
 * userdata's user value keeps alive. A write that does not copy the
 * payload must pin the userdata until it is done. */
typedef struct lmp_piece {
  size_t at;        /* offset in the bytes where the string goes */
  const char *data;
  size_t len;
} lmp_piece;
typedef struct lmp_payload {
  size_t length;    /* of the whole encoding: bytes and pieces */
  size_t bytes_len;
  size_t piece_count;
  lmp_piece pieces[];
} lmp_payload;
#define LMP_PAYLOAD_BYTES(p) ((char *)((p)->pieces + (p)->piece_count))
lmp_payload *lmp__check_payload(lua_State *L, int idx);
/* Fills bufs (room for 2 * piece_count + 1) with the payload's bytes in
 * order; returns how many it used. */
size_t lmp__payload_bufs(const lmp_payload *payload, uv_buf_t *bufs);
/* Pushes a payload userdata made of what lmp__encode_pieces gave: the
 * buffer `b` (copied) and the long strings in the table at `pieces` (nil
 * when there were none), which the userdata then keeps alive. */
lmp_payload *lmp__push_payload(lua_State *L, const lmp_buffer *b, int pieces);

/* embed.c: package.preload entries for lmp's embedded Lua modules. */
void lmp__install_preload(lua_State *L);

/* loop.c */
/* The loop lmp runs on in L, chosen at its first use: the host's, luv's,
 * or libuv's default loop. */
uv_loop_t *lmp__loop(lua_State *L);
/* Called when the script loads luv: if lmp already runs on another loop,
 * that loop is embedded in luv's, so that uv.run() serves both. Never
 * raises (it runs inside require); a failure is printed on stderr. */
void lmp__loop_luv_loaded(lua_State *L);
/* The main thread of L's state: libuv callbacks call Lua there. */
lua_State *lmp__main_thread(lua_State *L);
/* How long to watch for an answer before sleeping, in ns ($LMP_SPIN_US). */
uint64_t lmp__spin_ns(void);
/* Calls the function below `nargs` arguments in protected mode; an error
 * goes to the reporter (lmp.on_error) or stderr. Pops them all. */
int lmp__call_protected(lua_State *L, int nargs);

/* Each binding file adds its functions to the lmp.core table on top. */
void lmp__open_loop(lua_State *L);
void lmp__open_process(lua_State *L);
void lmp__open_worker(lua_State *L);
void lmp__open_interrupt(lua_State *L);
void lmp__open_shared(lua_State *L);
void lmp__open_server(lua_State *L);
void lmp__open_digest(lua_State *L);
/* tracker.c: registers (add) or unregisters a name with this process's
 * resource tracker, made on first need. kind: 's' shared memory name, 'f'
 * file, 'd' directory. Returns 0 or -errno. */
int lmp__track(int add, char kind, const char *path);
void lmp__open_tracker(lua_State *L);
void lmp__open_terminal(lua_State *L);
/* interrupt.c: stops watching for Ctrl-C (the lua_State is closing). */
void lmp__close_interrupt(void);
/* interrupt.c: SIGPIPE keeps its default for the script and the programs
 * it starts; only lmp's own writes are shielded from it. Installs (once,
 * when SIGPIPE has its default) a handler that lets a SIGPIPE pass while
 * lmp__shield_sigpipe holds a shield up and otherwise does what the
 * default would have done. lmp__shield_sigpipe(+1) before a write lmp
 * makes through libuv (or queues on it), -1 once it is done. Writes lmp
 * makes itself use MSG_NOSIGNAL instead. */
void lmp__guard_sigpipe(void);
void lmp__shield_sigpipe(int delta);

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
/* process.c: whether part of a message from a worker has arrived and the
 * rest is on its way (then watching for it would only slow its writer). */
int lmp__receiving(void);
/* process.c: whether this process is a worker made by fork (the "fork"
 * start method): what it inherited from its parent (worker handles, the
 * event loop, connections) is the parent's, not to be touched here. */
int lmp__forked_worker(void);

/* worker.c: the set-up every worker does first, given its parent's pid:
 * dies with the parent, ignores Ctrl-C, guards SIGPIPE, blocking channel on
 * fd 3. Returns 0, or -1 if this process cannot be that worker. */
int lmp__become_worker(long parent);
/* worker.c: runs require("lmp.worker").main() in L; the exit status. */
int lmp__run_worker(lua_State *L);

#endif
