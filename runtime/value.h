/* The value format layer: the encoder and decoder (encode.c, decode.c, see
 * value_format.md), names (names.c), error objects (error.c) and payloads,
 * values encoded once and sent as they are (payload.c). Internal; uses
 * only the layers below it (memory, buffer). */
#ifndef LMP_VALUE_H
#define LMP_VALUE_H

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

/* encode.c, decode.c: the value format (see value_format.md). */
#define LMP_FORMAT_VERSION 2
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
 * for the k-th item (from 0). `envelope` levels of each item are lmp's own
 * wrapping (as lmp__encode_message's), not counted against the limit.
 * Otherwise as lmp__encode_pieces. A list of at least 4 numbers, all
 * integers or all floats (a map's usual chunk, and its answer), is
 * encoded as the number array of its items instead, whose count is its n
 * (lmp__decode_list gives it back). */
int lmp__encode_list(lua_State *L, int idx, lua_Integer first, lua_Integer count,
                     lua_Integer name_first, lmp_buffer *out, const char *root, int pieces,
                     int envelope);
/* Appends the message a worker gets for a task whose function it has:
 * the bytes lmp__encode makes of {"task", id, function_id, false, mode,
 * false, false}, without making that table (one per task otherwise). */
void lmp__encode_task_message(lua_State *L, lmp_buffer *out, lua_Integer id,
                              lua_Integer function_id, const char *mode);
/* Reads the n bytes at bytes when they are exactly what
 * lmp__encode_task_message makes (a task whose function the worker has):
 * returns 1 with the id, the function's id and the mode (mode_len bytes
 * at *mode, inside `bytes`); 0 for anything else, which the caller then
 * decodes as a value. Reads nothing outside the n bytes; no Lua. */
int lmp__read_task_message(const char *bytes, size_t n, lua_Integer *id,
                           lua_Integer *function_id, const char **mode, size_t *mode_len);
/* Decodes bytes made by lmp__encode_list straight into the table at dst:
 * dst[first + k] = item k (from 0), without making the list. Returns 0,
 * having done nothing, when the bytes are not a list of `count` items (the
 * caller then decodes them as a value). Malformed bytes raise. */
int lmp__decode_list_into(lua_State *L, const char *p, size_t n, int dst,
                          lua_Integer first, lua_Integer count);
/* Whether the n bytes at p are a list lmp__encode_list made a number
 * array of (their tag says so; the rest is not checked). */
int lmp__is_number_list(const char *p, size_t n);
/* A list lmp__encode_list made a number array of, read where it lies:
 * `count` values of `width` bytes each at `data`, floats or integers. */
typedef struct lmp_number_list {
  const unsigned char *data;
  uint32_t count;
  unsigned width;
  int is_float;
} lmp_number_list;
/* Fills *list from the n bytes at p when they are such a list and its
 * values fill the rest of the bytes exactly; returns 1, else 0 (the
 * caller then decodes them as a value). */
int lmp__open_number_list(const char *p, size_t n, lmp_number_list *list);
/* Pushes value i (from 0, below list->count) of the list. */
void lmp__push_list_number(lua_State *L, const lmp_number_list *list, uint32_t i);
/* Decodes bytes made by lmp__encode_list and pushes the list, {n = count,
 * ...} whichever way it was encoded; as lmp__decode otherwise. */
void lmp__decode_list(lua_State *L, const char *p, size_t n);
/* When the n bytes at p are one integer and nothing else (a task's
 * answer, most often), pushes it and returns 1, with no allocation and
 * nothing that can raise; else returns 0 and pushes nothing. */
int lmp__decode_integer(lua_State *L, const char *p, size_t n);
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
 * it does not know while names are lenient (lmp__names_set_lenient). */
#define LMP_MISSING_NAME_META "lmp.MissingName"
/* Whether names this process does not know decode as placeholders, each
 * recorded, instead of raising (a worker reading its channel:
 * core.channel_recv). */
void lmp__names_set_lenient(lua_State *L, int on);
/* Pushes the array of reasons recorded since the last call, or nil. */
void lmp__names_take_missing(lua_State *L);
/* Watches package.loaded for new modules (idempotent): lmp__names_push_map
 * learns that its map is stale, and lmp__loop_luv_loaded runs when luv
 * arrives. */
void lmp__names_watch_loaded(lua_State *L);
/* Who is told when luv arrives in package.loaded (the loop layer, which
 * then joins its loop to luv's); set before lmp__names_watch_loaded. */
void lmp__names_on_luv_loaded(void (*hook)(lua_State *L));
/* Adds register to the table on top. */
void lmp__open_names(lua_State *L);

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

/* Adds Error and error (an error object made, not raised) to the table on
 * top. */
void lmp__open_error(lua_State *L);

/* descriptors.c: the descriptors a frame carries (see there). A box is a
 * userdata whose __gc closes the descriptors it still holds (-1: taken). */
#define LMP_DESCRIPTORS_MAX 64
typedef struct lmp_descriptors {
  int n;
  int base; /* while collecting: slots number those from here on, from 1 */
  int fd[LMP_DESCRIPTORS_MAX];     /* owned by the box */
  int source[LMP_DESCRIPTORS_MAX]; /* what each duplicates, while collecting */
  unsigned char shared[LMP_DESCRIPTORS_MAX]; /* a collector's shared duplicate */
} lmp_descriptors;
/* Pushes an empty box. */
lmp_descriptors *lmp__push_descriptors(lua_State *L);
/* Pushes an empty box for collecting: the state's spare one when it has
 * it (so that the usual encoding, which collects nothing, allocates
 * nothing), else a new one. Give it back once it is empty (what it holds
 * is closed) unless something keeps it. */
lmp_descriptors *lmp__take_descriptors(lua_State *L);
void lmp__give_back_descriptors(lua_State *L, int idx);
/* The same, with the spare kept at `slot`, a C function's upvalue (a
 * pseudo-index), rather than in the registry: cheaper for a binding that
 * runs once per task. */
lmp_descriptors *lmp__take_descriptors_at(lua_State *L, int slot);
void lmp__give_back_descriptors_at(lua_State *L, int idx, int slot);
/* Gives fd to the box (which closes it if nobody takes it). Returns 0, or
 * -EMFILE when the box is full (fd is then the caller's still). */
int lmp__descriptors_add(lmp_descriptors *d, int fd);
/* Closes what the box holds and empties it. */
void lmp__descriptors_close(lmp_descriptors *d);
/* Makes d (or NULL) the box that core.pass_fd fills, or the box whose
 * descriptors core.take_fd takes; each returns the previous one, to be
 * put back when the encoding or decoding is done. */
lmp_descriptors *lmp__descriptors_collect(lmp_descriptors *d);
lmp_descriptors *lmp__descriptors_offer(lmp_descriptors *d);
/* In a forked worker that closed the descriptors it inherited: forgets
 * the parent's shared duplicates. */
void lmp__descriptors_forget_parent(void);
/* Adds pass_fd, take_fd, fd_identity and descriptor_generation to the
 * table on top. */
void lmp__open_descriptors(lua_State *L);

/* payload.c: the userdata at idx if its metatable is registry[key] (a light
 * userdata key: found without hashing a name, unlike luaL_checkudata,
 * which showed in profiles of calls made once per task), else NULL. */
void *lmp__to_class(lua_State *L, int idx, const void *key);
/* The same, compared with the metatable at `meta` (a C function's upvalue,
 * cheaper to reach than the registry) when that holds a table. */
void *lmp__to_class_at(lua_State *L, int idx, int meta, const void *key);

/* payload.c: encode buffers. Takes the state's spare buffer (or makes one),
 * empty, boxed in a userdata with __gc pushed on the stack, so that an
 * error while encoding cannot leak it. Give it back when done with it: the
 * next encoding reuses its memory instead of allocating. A box not given
 * back (an error unwound past it) is simply collected. */
lmp_buffer *lmp__take_encode_box(lua_State *L);
void lmp__give_back_encode_box(lua_State *L, int idx);

/* payload.c: an encoded value (core.encode), a userdata owned by Lua: a
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
  lmp_descriptors *descriptors; /* those its values hold (kept alive by
                                   user value 2), or NULL */
  size_t bytes_len;
  size_t piece_count;
  lmp_piece pieces[];
} lmp_payload;
#define LMP_PAYLOAD_BYTES(p) ((char *)((p)->pieces + (p)->piece_count))
lmp_payload *lmp__check_payload(lua_State *L, int idx);
/* The same with the payloads' metatable at `meta` (see lmp__to_class_at),
 * which lmp__push_payload_meta pushes. */
lmp_payload *lmp__check_payload_at(lua_State *L, int idx, int meta);
void lmp__push_payload_meta(lua_State *L);
/* Fills bufs (room for 2 * piece_count + 1) with the payload's bytes in
 * order; returns how many it used. */
size_t lmp__payload_bufs(const lmp_payload *payload, uv_buf_t *bufs);
/* Pushes a payload userdata made of what lmp__encode_pieces gave: the
 * buffer `b` (copied) and the long strings in the table at `pieces` (nil
 * when there were none), which the userdata then keeps alive. */
lmp_payload *lmp__push_payload(lua_State *L, const lmp_buffer *b, int pieces);

/* Adds dumps, loads, encode and encode_list to the table on top. */
void lmp__open_payload(lua_State *L);

/* Adds imap_cursor and the cursor_ functions (cursor.c: the C step of an
 * imap iterator) to the table on top. */
void lmp__open_cursor(lua_State *L);

#endif
