/* The value format, decoding: bytes made by encode.c (or by anyone: the
 * decoder trusts nothing it reads) become a Lua value again.
 * value_format.md beside this file describes the bytes. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "value_tags.h"

/* ---- decoding ---------------------------------------------------------- */

typedef struct decoder {
  lua_State *L;
  const unsigned char *start, *p, *end;
  int slots; /* stack index of the first of REF_SLOTS objects (ids 1..) */
  int refs;  /* stack index: id -> object, for the ids after those */
  lua_Integer next_id;
  int depth;
  int max_depth; /* LMP_MAX_DEPTH for lmp.loads; more for a message */
  /* Table slots the input can still justify. Every array element, key and
   * value starts with a tag byte of its own, so the slots of all tables
   * together never outnumber the bytes; presizing from this budget bounds
   * what forged counts in nested tables can make us allocate. */
  size_t slot_budget;
  int flags; /* LMP_DECODE_DATA, LMP_DECODE_NO_METATABLES */
} decoder;


static LMP_NORETURN void malformed(decoder *d, const char *what) {
  lmp__raisef(d->L, "lmp.loads: malformed data (%s at byte %I)", what,
               (lua_Integer)(d->p - d->start));
}

static LMP_NORETURN void refused(decoder *d, const char *what, const char *option) {
  lmp__raisef(d->L, "lmp.loads: %s at byte %I, and %s are refused "
              "(loads was called with {%s = false})", what,
              (lua_Integer)(d->p - 1 - d->start), option, option);
}

static inline void need(decoder *d, size_t n) {
  if ((size_t)(d->end - d->p) < n) malformed(d, "truncated");
}

static uint64_t get_varint(decoder *d) {
  uint64_t v = 0;
  int shift = 0;
  for (;;) {
    unsigned char c;
    need(d, 1);
    c = *d->p++;
    if (shift == 63 && c > 1) malformed(d, "integer too large");
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
    shift += 7;
    if (shift > 63) malformed(d, "integer too long");
  }
}

static uint32_t get_u32(decoder *d) {
  uint32_t v;
  need(d, 4);
  memcpy(&v, d->p, 4);
  d->p += 4;
  return v;
}

static size_t get_length(decoder *d) {
  uint64_t len;
  /* Most lengths are under 128: one byte, read without the loop. */
  if (d->p < d->end && *d->p < 0x80) len = *d->p++;
  else len = get_varint(d);
  if (len > (uint64_t)(d->end - d->p)) malformed(d, "length past the end");
  return (size_t)len;
}

static lua_Integer new_id(decoder *d) {
  return d->next_id++;
}

/* The objects decoded so far, by id, for the references that name them.
 * The first REF_SLOTS sit in stack slots: most messages are a number or a
 * few small tables (a task and its arguments), and a slot costs no table
 * and nothing to clear afterwards. The rest go in a table made when first
 * needed and reused across decodings, as the encoder's is. */
#define REF_SLOTS 8
static const char decode_refs_key = 'D';

/* Pushes the slots and the place of the table (all nil) on the stack. */
static void open_refs(decoder *d) {
  d->slots = lua_gettop(d->L) + 1;
  d->refs = d->slots + REF_SLOTS;
  lua_settop(d->L, d->refs);
}

static void remember(decoder *d, lua_Integer id) {
  lua_State *L = d->L;
  if (id <= REF_SLOTS) {
    lua_copy(L, -1, d->slots + (int)id - 1);
    return;
  }
  if (lua_isnil(L, d->refs)) lmp__take_spare_table(L, &decode_refs_key, d->refs);
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, id);
}

/* Pushes object `id`, which the input may only name once decoded. */
static void push_ref(decoder *d, uint64_t id, const char *what) {
  if (id == 0 || id >= (uint64_t)d->next_id) malformed(d, what);
  if (id <= REF_SLOTS) {
    lua_pushvalue(d->L, d->slots + (int)id - 1);
    return;
  }
  if (!lua_istable(d->L, d->refs)) malformed(d, what);
  lua_rawgeti(d->L, d->refs, (lua_Integer)id);
}

static void give_back_decode_refs(decoder *d) {
  lua_State *L = d->L;
  lua_Integer i;
  if (!lua_istable(L, d->refs) || d->next_id - 1 > 64) return;
  for (i = REF_SLOTS + 1; i < d->next_id; i++) {
    lua_pushnil(L);
    lua_rawseti(L, d->refs, i);
  }
  lua_pushvalue(L, d->refs);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &decode_refs_key);
}

static void enter_decode(decoder *d) {
  if (++d->depth > d->max_depth)
    malformed(d, d->max_depth == LMP_MAX_DEPTH ? "nested deeper than 200 levels"
                                               : "nested too deep");
  luaL_checkstack(d->L, 8, "lmp: decoding");
}

static void decode_value(decoder *d);

static void decode_table(decoder *d, int with_meta) {
  lua_State *L = d->L;
  uint32_t narray = get_u32(d), nhash = get_u32(d), i;
  uint64_t slots = (uint64_t)narray + 2 * (uint64_t)nhash + (with_meta ? 1 : 0);
  int table;
  if (slots > (uint64_t)(d->end - d->p) || slots > d->slot_budget)
    malformed(d, "table larger than the data");
  d->slot_budget -= (size_t)slots;
  enter_decode(d);
  lua_createtable(L, (int)(narray > INT_MAX ? INT_MAX : narray),
                  (int)(nhash > INT_MAX ? INT_MAX : nhash));
  table = lua_gettop(L);
  remember(d, new_id(d));
  for (i = 1; i <= narray; i++) {
    decode_value(d);
    lua_rawseti(L, table, (lua_Integer)i);
  }
  for (i = 0; i < nhash; i++) {
    int key_type;
    decode_value(d);
    key_type = lua_type(L, -1);
    if (key_type == LUA_TNIL) malformed(d, "nil table key");
    if (key_type == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
      malformed(d, "NaN table key");
    decode_value(d);
    lua_rawset(L, table);
  }
  if (with_meta) {
    decode_value(d);
    if (lua_type(L, -1) != LUA_TTABLE) malformed(d, "metatable is not a table");
    lua_setmetatable(L, table);
  }
  d->depth--;
}

/* ---- checking a Lua binary chunk before Lua loads it ------------------- */

/* Lua loads binary chunks on trust. Its loader (lundump.c) takes a
 * closure's upvalue count from a header byte that nothing compares with the
 * prototype's (lua_upvaluejoin then reaches outside the closure); in 5.4.4,
 * the release Debian ships, it writes as many upvalue names as the chunk
 * says, past the end of a shorter array (tests/fuzz found it; later
 * releases check); and it recurses once per nested function without limit.
 * So a chunk from another process is first walked here, field by field in
 * the order lundump.c reads them, and refused unless every count fits in
 * its bytes and those three agree. A chunk that passes makes lua_load
 * allocate at most a small multiple of its length. */

/* Lua 5.4's chunk header: signature, version, format, LUAC_DATA, three
 * sizes, LUAC_INT and LUAC_NUM. lua_load checks its contents. */
#define CHUNK_HEADER_SIZE (4 + 1 + 1 + 6 + 3 + sizeof(lua_Integer) + sizeof(lua_Number))
#define CHUNK_INSTRUCTION_SIZE 4
/* Lua's compiler nests functions about 100 deep at most. */
#define CHUNK_MAX_NESTING 200
/* Constant tags in a chunk (lobject.h's variant tags). */
#define CHUNK_INTEGER 0x03
#define CHUNK_FLOAT 0x13
#define CHUNK_SHORT_STRING 0x04
#define CHUNK_LONG_STRING 0x14

typedef struct chunk_walk {
  const unsigned char *p, *end;
  int depth;
} chunk_walk;

static int walk_skip(chunk_walk *w, size_t n) {
  if ((size_t)(w->end - w->p) < n) return -1;
  w->p += n;
  return 0;
}

static int walk_skip_items(chunk_walk *w, size_t count, size_t size) {
  if (count > (size_t)-1 / size) return -1;
  return walk_skip(w, count * size);
}

static int walk_byte(chunk_walk *w, unsigned *b) {
  if (w->p == w->end) return -1;
  *b = *w->p++;
  return 0;
}

/* lundump.c's loadUnsigned: 7 bits a byte, most significant first, the
 * last byte marked with 0x80. */
static int walk_unsigned(chunk_walk *w, size_t limit, size_t *n) {
  size_t x = 0;
  unsigned b;
  limit >>= 7;
  do {
    if (walk_byte(w, &b) || x >= limit) return -1;
    x = (x << 7) | (b & 0x7f);
  } while (!(b & 0x80));
  *n = x;
  return 0;
}

static int walk_int(chunk_walk *w, size_t *n) {
  return walk_unsigned(w, INT_MAX, n);
}

/* A string is its length + 1 (0 for none), then its bytes. */
static int walk_string(chunk_walk *w) {
  size_t n;
  if (walk_unsigned(w, (size_t)-1, &n)) return -1;
  return n == 0 ? 0 : walk_skip(w, n - 1);
}

static int walk_function(chunk_walk *w, size_t *upvalue_count) {
  size_t n, i, upvalues, unused;
  unsigned tag;
  if (++w->depth > CHUNK_MAX_NESTING) return -1;
  /* source, first and last line, parameters, vararg flag, stack size */
  if (walk_string(w) || walk_int(w, &unused) || walk_int(w, &unused) || walk_skip(w, 3))
    return -1;
  if (walk_int(w, &n) || walk_skip_items(w, n, CHUNK_INSTRUCTION_SIZE)) return -1;
  if (walk_int(w, &n)) return -1;
  for (i = 0; i < n; i++) {
    if (walk_byte(w, &tag)) return -1;
    if (tag == CHUNK_INTEGER) {
      if (walk_skip(w, sizeof(lua_Integer))) return -1;
    } else if (tag == CHUNK_FLOAT) {
      if (walk_skip(w, sizeof(lua_Number))) return -1;
    } else if (tag == CHUNK_SHORT_STRING || tag == CHUNK_LONG_STRING) {
      if (walk_string(w)) return -1;
    } /* nil and booleans have no bytes; the loader ignores unknown tags */
  }
  /* upvalues: in stack, index, kind */
  if (walk_int(w, &upvalues) || walk_skip_items(w, upvalues, 3)) return -1;
  if (walk_int(w, &n)) return -1;
  for (i = 0; i < n; i++)
    if (walk_function(w, &unused)) return -1;
  /* debug information: line deltas, absolute lines, locals, upvalue names */
  if (walk_int(w, &n) || walk_skip(w, n)) return -1;
  if (walk_int(w, &n)) return -1;
  for (i = 0; i < n; i++)
    if (walk_int(w, &unused) || walk_int(w, &unused)) return -1;
  if (walk_int(w, &n)) return -1;
  for (i = 0; i < n; i++)
    if (walk_string(w) || walk_int(w, &unused) || walk_int(w, &unused)) return -1;
  if (walk_int(w, &n) || (n != 0 && n != upvalues)) return -1;
  for (i = 0; i < n; i++)
    if (walk_string(w)) return -1;
  w->depth--;
  *upvalue_count = upvalues;
  return 0;
}

/* Returns 0 if lua_load may be given the chunk. */
static int check_chunk(const unsigned char *chunk, size_t length) {
  chunk_walk w;
  unsigned closure_upvalues;
  size_t upvalues;
  w.p = chunk;
  w.end = chunk + length;
  w.depth = 0;
  if (walk_skip(&w, CHUNK_HEADER_SIZE) || walk_byte(&w, &closure_upvalues) ||
      walk_function(&w, &upvalues))
    return -1;
  return upvalues == closure_upvalues && w.p == w.end ? 0 : -1;
}

typedef struct chunk_reader {
  const char *p;
  size_t n;
} chunk_reader;

static const char *read_chunk(lua_State *L, void *ud, size_t *size) {
  chunk_reader *r = ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size ? r->p : NULL;
}

static void decode_function(decoder *d) {
  lua_State *L = d->L;
  chunk_reader reader;
  lua_Debug ar;
  unsigned nups, i;
  int fn;
  uint32_t length;
  lua_Integer id;
  need(d, 5);
  if ((d->p[0] | d->p[1] << 8) != LUA_VERSION_NUM || d->p[2] != sizeof(void *) ||
      d->p[3] != sizeof(lua_Integer) || d->p[4] != sizeof(lua_Number))
    lmp__raisef(L, "lmp.loads: a function was compiled by Lua %d.%d with %d-byte "
                 "pointers, %d-byte integers and %d-byte floats; this process "
                 "runs Lua %d.%d with %d, %d and %d",
                 (d->p[0] | d->p[1] << 8) / 100, (d->p[0] | d->p[1] << 8) % 100,
                 d->p[2], d->p[3], d->p[4], LUA_VERSION_NUM / 100,
                 LUA_VERSION_NUM % 100, (int)sizeof(void *),
                 (int)sizeof(lua_Integer), (int)sizeof(lua_Number));
  d->p += 5;
  length = get_u32(d);
  need(d, length);
  if (check_chunk(d->p, length) != 0) malformed(d, "bad function bytecode");
  enter_decode(d);
  reader.p = (const char *)d->p;
  reader.n = length;
  if (lua_load(L, read_chunk, &reader, "=(lmp)", "b") != LUA_OK)
    lmp__raisef(L, "lmp.loads: malformed function (%s)", lua_tostring(L, -1));
  d->p += length;
  fn = lua_gettop(L);
  id = new_id(d);
  remember(d, id);
  need(d, 1);
  nups = *d->p++;
  lua_pushvalue(L, fn);
  lua_getinfo(L, ">u", &ar);
  if (nups != ar.nups) malformed(d, "upvalue count does not match the function");
  for (i = 1; i <= nups; i++) {
    need(d, 1);
    if (*d->p == T_UPVALUE_REF) {
      uint64_t other_id;
      unsigned other_n;
      lua_Debug other;
      d->p++;
      other_id = get_varint(d);
      need(d, 1);
      other_n = *d->p++;
      push_ref(d, other_id, "bad upvalue reference");
      if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1))
        malformed(d, "bad upvalue reference");
      lua_pushvalue(L, -1);
      lua_getinfo(L, ">u", &other);
      if (other_n < 1 || other_n > other.nups) malformed(d, "bad upvalue reference");
      lua_upvaluejoin(L, fn, (int)i, -1, (int)other_n);
      lua_pop(L, 1);
    } else {
      decode_value(d);
      lua_setupvalue(L, fn, (int)i);
    }
  }
  d->depth--;
}

static void decode_named(decoder *d) {
  lua_State *L = d->L;
  lua_Integer id = new_id(d);
  size_t len = get_length(d);
  const char *record = (const char *)d->p;
  d->p += len;
  luaL_checkstack(L, 8, "lmp: decoding");
  lmp__names_resolve(L, record, len);
  remember(d, id);
}

static void decode_custom(decoder *d) {
  lua_State *L = d->L;
  lua_Integer id = new_id(d);
  size_t len = get_length(d);
  enter_decode(d);
  lua_pushlstring(L, (const char *)d->p, len);
  d->p += len;
  lmp__names_push_constructor(L, lua_tostring(L, -1));
  lua_remove(L, -2);
  decode_value(d);
  lua_call(L, 1, 1);
  remember(d, id);
  d->depth--;
}

static void decode_value(decoder *d) {
  lua_State *L = d->L;
  unsigned char tag;
  need(d, 1);
  tag = *d->p++;
  switch (tag) {
    case T_NIL:
      lua_pushnil(L);
      return;
    case T_FALSE:
      lua_pushboolean(L, 0);
      return;
    case T_TRUE:
      lua_pushboolean(L, 1);
      return;
    case T_INT8:
      need(d, 1);
      lua_pushinteger(L, (int8_t)*d->p++);
      return;
    case T_INT32: {
      int32_t v;
      need(d, 4);
      memcpy(&v, d->p, 4);
      d->p += 4;
      lua_pushinteger(L, v);
      return;
    }
    case T_INT64: {
      int64_t v;
      need(d, 8);
      memcpy(&v, d->p, 8);
      d->p += 8;
      lua_pushinteger(L, (lua_Integer)v);
      return;
    }
    case T_FLOAT: {
      double v;
      need(d, 8);
      memcpy(&v, d->p, 8);
      d->p += 8;
      lua_pushnumber(L, (lua_Number)v);
      return;
    }
    case T_STRING: {
      size_t len = get_length(d);
      lua_pushlstring(L, (const char *)d->p, len);
      d->p += len;
      return;
    }
    case T_TABLE:
    case T_TABLE_MT:
      if (tag == T_TABLE_MT && (d->flags & LMP_DECODE_NO_METATABLES))
        refused(d, "a metatable", "metatables");
      decode_table(d, tag == T_TABLE_MT);
      return;
    case T_FLOAT_ARRAY:
    case T_INT_ARRAY: {
      const char *bad = lmp__decode_number_array(L, tag, &d->p, d->end, &d->slot_budget);
      if (bad) malformed(d, bad);
      remember(d, new_id(d));
      return;
    }
    case T_REF: {
      push_ref(d, get_varint(d), "reference to nothing");
      return;
    }
    case T_GLOBALS:
      /* The receiver's globals hold every function it has. */
      if (d->flags & LMP_DECODE_DATA) refused(d, "the globals table", "functions");
      lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
      return;
    case T_FUNCTION:
      if (d->flags & LMP_DECODE_DATA) refused(d, "a function", "functions");
      decode_function(d);
      return;
    case T_NAMED:
      /* Resolving a name may require a module: it runs that module. */
      if (d->flags & LMP_DECODE_DATA) refused(d, "a value sent by name", "functions");
      decode_named(d);
      return;
    case T_CUSTOM:
      /* Calls the constructor registered under the name the data gives. */
      if (d->flags & LMP_DECODE_DATA)
        refused(d, "a value made by a registered constructor", "functions");
      decode_custom(d);
      return;
    default:
      d->p--;
      malformed(d, "unknown type tag");
  }
}

int lmp__decode_list_into(lua_State *L, const char *p, size_t n, int dst,
                          lua_Integer first, lua_Integer count) {
  decoder d;
  int top = lua_gettop(L);
  uint32_t narray, nhash, i;
  dst = lua_absindex(L, dst);
  if (lmp__is_number_list(p, n)) {
    /* A list of numbers (lmp__encode_list): its values go straight from
     * the block to dst. */
    const unsigned char *q = (const unsigned char *)p + 2, *end = (const unsigned char *)p + n;
    size_t budget = n;
    if (lmp__decode_number_array_into(L, p[1], &q, end, &budget, dst, first, count) != NULL ||
        q != end)
      return 0;
    return 1;
  }
  /* Otherwise only the shape lmp__encode_list makes: a table of `count`
   * values and one more key (n), no metatable. */
  if (n < 10 || (unsigned char)p[0] != LMP_FORMAT_VERSION || p[1] != T_TABLE) return 0;
  memset(&d, 0, sizeof d);
  d.L = L;
  d.start = (const unsigned char *)p;
  d.p = d.start + 2;
  d.end = d.start + n;
  d.next_id = 1;
  d.max_depth = LMP_MAX_DEPTH + LMP_ENVELOPE_DEPTH;
  d.slot_budget = n;
  narray = get_u32(&d);
  nhash = get_u32(&d);
  if ((lua_Integer)narray != count || nhash > 1) return 0;
  luaL_checkstack(L, 16 + REF_SLOTS, "lmp: decoding");
  open_refs(&d);
  d.slot_budget -= narray < d.slot_budget ? narray : d.slot_budget;
  /* The list itself would be object 1; nothing in it can refer to it. */
  lua_pushvalue(L, dst);
  remember(&d, new_id(&d));
  for (i = 0; i < narray; i++) {
    decode_value(&d);
    lua_rawseti(L, dst, first + (lua_Integer)i);
  }
  for (i = 0; i < nhash; i++) { /* n */
    decode_value(&d);
    decode_value(&d);
    lua_pop(L, 2);
  }
  if (d.p != d.end) malformed(&d, "trailing bytes");
  give_back_decode_refs(&d);
  lua_settop(L, top);
  return 1;
}

void lmp__decode_list(lua_State *L, const char *p, size_t n) {
  if (lmp__is_number_list(p, n)) {
    uint32_t count;
    memcpy(&count, p + 2, 4);
    /* A count the bytes cannot hold is refused below by lmp__decode, before
     * a table of that size is made. */
    if (count <= n) {
      lua_createtable(L, (int)count, 1);
      lua_pushinteger(L, (lua_Integer)count);
      lua_setfield(L, -2, "n");
      if (lmp__decode_list_into(L, p, n, -1, 1, (lua_Integer)count)) return;
      lua_pop(L, 1);
    }
  }
  lmp__decode(L, p, n);
}

/* An integer as lmp__put_integer writes it, at *p (before end); 0 when
 * there is none. */
static int read_integer(const unsigned char **p, const unsigned char *end, lua_Integer *v) {
  const unsigned char *q = *p;
  if (q >= end) return 0;
  if (*q == T_INT8 && end - q >= 2) {
    *v = (int8_t)q[1];
    *p = q + 2;
    return 1;
  }
  if (*q == T_INT32 && end - q >= 5) {
    int32_t v32;
    memcpy(&v32, q + 1, 4);
    *v = v32;
    *p = q + 5;
    return 1;
  }
  if (*q == T_INT64 && end - q >= 9) {
    int64_t v64;
    memcpy(&v64, q + 1, 8);
    *v = (lua_Integer)v64;
    *p = q + 9;
    return 1;
  }
  return 0;
}

int lmp__read_task_message(const char *bytes, size_t n, lua_Integer *id,
                           lua_Integer *function_id, const char **mode, size_t *mode_len) {
  /* version, T_TABLE, 7 array values, no hash part, T_STRING "task" */
  static const unsigned char head[] = {LMP_FORMAT_VERSION, T_TABLE, 7, 0, 0, 0, 0, 0, 0, 0,
                                       T_STRING, 4, 't', 'a', 's', 'k'};
  const unsigned char *p = (const unsigned char *)bytes, *end = p + n;
  size_t len;
  if (n < sizeof head || memcmp(p, head, sizeof head) != 0) return 0;
  p += sizeof head;
  if (!read_integer(&p, end, id) || !read_integer(&p, end, function_id)) return 0;
  /* false (no function), the mode (a short string: one length byte), false, false */
  if (end - p < 3 || p[0] != T_FALSE || p[1] != T_STRING || p[2] > 127) return 0;
  len = p[2];
  p += 3;
  if ((size_t)(end - p) != len + 2 || p[len] != T_FALSE || p[len + 1] != T_FALSE) return 0;
  *mode = (const char *)p;
  *mode_len = len;
  return 1;
}

static void decode_bytes(lua_State *L, const char *p, size_t n, int flags, int max_depth);

int lmp__decode_integer(lua_State *L, const char *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p, *end = b + n;
  lua_Integer v;
  if (n < 2 || b[0] != LMP_FORMAT_VERSION) return 0;
  b++;
  if (!read_integer(&b, end, &v) || b != end) return 0;
  lua_pushinteger(L, v);
  return 1;
}

/* A message's values were encoded as lmp.dumps encodes them, below the
 * levels of the message around them (lmp__encode_message, and a task's
 * argument list, which the encoder does not count): the limit has room for
 * both, so that whatever dumps accepts goes through every path. */
void lmp__decode(lua_State *L, const char *p, size_t n) {
  decode_bytes(L, p, n, 0, LMP_MAX_DEPTH + LMP_ENVELOPE_DEPTH);
}

void lmp__decode_with(lua_State *L, const char *p, size_t n, int flags) {
  decode_bytes(L, p, n, flags, LMP_MAX_DEPTH);
}

void lmp__decode_enveloped(lua_State *L, const char *p, size_t n, int flags, int envelope) {
  decode_bytes(L, p, n, flags, LMP_MAX_DEPTH + envelope);
}

static void decode_bytes(lua_State *L, const char *p, size_t n, int flags, int max_depth) {
  decoder d;
  int top = lua_gettop(L);
  memset(&d, 0, sizeof d);
  d.L = L;
  d.start = d.p = (const unsigned char *)p;
  d.end = d.p + n;
  d.next_id = 1;
  d.slot_budget = n;
  d.flags = flags;
  d.max_depth = max_depth;
  luaL_checkstack(L, 16 + REF_SLOTS, "lmp: decoding");
  open_refs(&d);
  need(&d, 1);
  if (*d.p != LMP_FORMAT_VERSION)
    lmp__raisef(L, "lmp.loads: not lmp data, or format version %d (this lmp "
                 "reads version %d)", *d.p, LMP_FORMAT_VERSION);
  d.p++;
  decode_value(&d);
  if (d.p != d.end) malformed(&d, "trailing bytes");
  give_back_decode_refs(&d);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}
