/* Declarations shared by the runtime's files; not part of the public API. */
#ifndef LMP_INTERNAL_H
#define LMP_INTERNAL_H

#include <lua.h>
#include <lauxlib.h>

#include <uv.h>

#include "buffer.h"

#if defined(__GNUC__)
#define LMP_NORETURN __attribute__((noreturn))
#else
#define LMP_NORETURN
#endif

/* value.c: the value format (see value_format.md). */
#define LMP_FORMAT_VERSION 1
#define LMP_MAX_DEPTH 200

/* Appends the encoding of the value at `idx` to `out`. Returns 0 on success.
 * A value that cannot be sent makes it return -1 with an lmp.Error (kind
 * "serialize") pushed, its message naming `root` plus the path to the
 * value. May raise Lua errors (out of memory, an erring __lmp_serialize),
 * so `out` must be owned by something the unwind does not leak. */
int lmp__encode(lua_State *L, int idx, lmp_buffer *out, const char *root);
/* The same, but strings of LMP_LONG_STRING bytes or more are left out of
 * `out`: their offset in it and the string go to the table at `pieces`
 * (offset, string, offset, string, ...), for the caller to join them in
 * with a single copy. */
#define LMP_LONG_STRING 65536
int lmp__encode_pieces(lua_State *L, int idx, lmp_buffer *out, const char *root,
                       int pieces);
/* Decodes the n bytes at p and pushes the value. Malformed bytes raise a
 * Lua error; nothing is allocated beyond what the bytes can justify. */
void lmp__decode(lua_State *L, const char *p, size_t n);
/* The same; with data_only set, a function or a value sent by name in the
 * bytes is refused with an error instead of loaded (untrusted input). */
void lmp__decode_with(lua_State *L, const char *p, size_t n, int data_only);

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

/* core.c: a buffer boxed in a userdata with __gc, pushed on the stack. */
lmp_buffer *lmp__new_encode_box(lua_State *L);
/* core.c: an encoded value (core.encode) with a count of its holders: the
 * Lua object and each write in flight. Its long strings (LMP_LONG_STRING
 * bytes or more) are not copied into `bytes`: each piece says where one
 * goes, and the write takes it from the Lua string itself, which the Lua
 * object keeps alive (so a write with pieces must pin the object). */
typedef struct lmp_piece {
  size_t at;        /* offset in bytes.data where the string goes */
  const char *data;
  size_t len;
} lmp_piece;
typedef struct lmp_payload {
  int refs;
  lmp_buffer bytes;
  lmp_piece *pieces;
  size_t piece_count;
  size_t length;    /* of the whole encoding: bytes and pieces */
} lmp_payload;
lmp_payload *lmp__check_payload(lua_State *L, int idx);
void lmp__payload_release(lmp_payload *payload);
/* Fills bufs (room for 2 * piece_count + 1) with the payload's bytes in
 * order; returns how many it used. */
size_t lmp__payload_bufs(const lmp_payload *payload, uv_buf_t *bufs);

/* embed.c: package.preload entries for lmp's embedded Lua modules. */
void lmp__install_preload(lua_State *L);

/* loop.c */
/* The loop lmp runs on in L, chosen at its first use: the host's, luv's,
 * or libuv's default loop. */
uv_loop_t *lmp__loop(lua_State *L);
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
/* interrupt.c: stops watching for Ctrl-C (the lua_State is closing). */
void lmp__close_interrupt(void);

/* process.c: kills and reaps every worker still running; returns how many.
 * Used on Ctrl-C. */
int lmp__kill_all_workers(void);

#endif
