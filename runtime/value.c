/* The value format: how a Lua value crosses between processes.
 * value_format.md beside this file describes the bytes. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "value.h"

/* Numbers and counts are stored in the host's byte order, which the format
 * defines as little-endian (value_format.md). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lmp's value format is little-endian: add byte swaps to value.c"
#endif

enum {
  T_NIL = 0,
  T_FALSE,
  T_TRUE,
  T_INT8,
  T_INT32,
  T_INT64,
  T_FLOAT,
  T_STRING,
  T_TABLE,
  T_TABLE_MT,
  T_REF,
  T_GLOBALS,
  T_FUNCTION,
  T_NAMED,
  T_CUSTOM,
  T_UPVALUE_REF
};

/* ---- encoding ---------------------------------------------------------- */

typedef struct encoder {
  lua_State *L;
  lmp_buffer *out;
  int refs;      /* stack index: object -> id */
  int upvalues;  /* stack index: upvalue id -> function id * 256 + index */
  int refs_made; /* refs holds a table (made on the first object met) */
  int names;     /* stack index: value -> name record, or nil until the
                  * first object that could have a name */
  int names_fresh;
  int pieces;    /* stack index of a table for long strings kept out of
                  * `out` (offset, string, offset, string...), or 0 */
  const void *globals;
  lua_Integer next_id;
  int depth;
  int max_depth; /* LMP_MAX_DEPTH, plus the levels of a message's envelope */
  /* A refusal: what could not be sent, the fix, and the path to it, built
   * back to front while the recursion unwinds. */
  char what[96];
  const char *fix;
  char path[400];
  size_t path_start;
} encoder;

static void out_of_memory(encoder *e) {
  luaL_error(e->L, "lmp: not enough memory to encode the value");
}

static inline void put(encoder *e, const void *p, size_t n) {
  if (lmp__buffer_append(e->out, p, n) != 0) out_of_memory(e);
}

static inline void put_byte(encoder *e, unsigned char c) {
  if (e->out->len == e->out->cap && lmp__buffer_reserve(e->out, 1) != 0)
    out_of_memory(e);
  e->out->data[e->out->len++] = (char)c;
}

static void put_varint(encoder *e, uint64_t v) {
  unsigned char bytes[10];
  size_t n = 0;
  do {
    unsigned char c = v & 0x7f;
    v >>= 7;
    bytes[n++] = c | (v ? 0x80 : 0);
  } while (v);
  put(e, bytes, n);
}

static size_t put_u32_placeholder(encoder *e) {
  uint32_t zero = 0;
  size_t at = e->out->len;
  put(e, &zero, 4);
  return at;
}

static void patch_u32(encoder *e, size_t at, uint32_t v) {
  memcpy(e->out->data + at, &v, 4);
}

static void put_string(encoder *e, const char *s, size_t len) {
  put_varint(e, len);
  put(e, s, len);
}

static int refuse(encoder *e, const char *what, const char *fix) {
  snprintf(e->what, sizeof e->what, "%s", what);
  e->fix = fix;
  return -1;
}

static void path_prepend(encoder *e, const char *part) {
  size_t n = strlen(part);
  if (e->path_start < n + 3) {
    if (e->path_start >= 3 && memcmp(e->path + e->path_start, "...", 3) != 0) {
      e->path_start -= 3;
      memcpy(e->path + e->path_start, "...", 3);
    }
    return;
  }
  e->path_start -= n;
  memcpy(e->path + e->path_start, part, n);
}

static int is_identifier(const char *s, size_t len) {
  size_t i;
  if (len == 0 || len > 40 || (s[0] >= '0' && s[0] <= '9')) return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return 0;
  }
  return 1;
}

/* Prepends the path element for the key at `key` (a stack index). */
static void path_prepend_key(encoder *e, int key) {
  lua_State *L = e->L;
  char part[64];
  size_t len;
  switch (lua_type(L, key)) {
    case LUA_TSTRING: {
      const char *s = lua_tolstring(L, key, &len);
      if (is_identifier(s, len))
        snprintf(part, sizeof part, ".%s", s);
      else
        snprintf(part, sizeof part, "[\"%.40s%s\"]", s, len > 40 ? "..." : "");
      break;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, key))
        snprintf(part, sizeof part, "[%lld]", (long long)lua_tointeger(L, key));
      else
        snprintf(part, sizeof part, "[%.14g]", (double)lua_tonumber(L, key));
      break;
    case LUA_TBOOLEAN:
      snprintf(part, sizeof part, "[%s]", lua_toboolean(L, key) ? "true" : "false");
      break;
    default:
      snprintf(part, sizeof part, "[<%s key>]", luaL_typename(L, key));
  }
  path_prepend(e, part);
}

static int encode_value(encoder *e, int idx);

/* The table of objects seen (object -> id) is made once per state and
 * reused: a small send (a task's arguments) would otherwise allocate a
 * table and grow its hash part every time. An encoding running while
 * another one holds it (an __lmp_serialize that sends) makes its own. */
static const char refs_cache_key = 'c';
#define REFS_KEEP 64 /* bigger tables are left to the collector */

/* Puts in stack slot `slot` the spare table kept under `key` in the
 * registry (taking it from there), or a new one. */
static void take_spare_table(lua_State *L, const void *key, int slot) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  } else {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  lua_replace(L, slot);
}

static void take_refs_table(encoder *e) {
  take_spare_table(e->L, &refs_cache_key, e->refs);
  e->refs_made = 1;
}

static void give_back_refs_table(encoder *e) {
  lua_State *L = e->L;
  if (!e->refs_made || e->next_id - 1 > REFS_KEEP) return;
  lua_pushnil(L);
  while (lua_next(L, e->refs)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, e->refs);
  }
  lua_pushvalue(L, e->refs);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &refs_cache_key);
}

/* An object (table, function, userdata) met before is sent as a reference
 * to its first occurrence; this keeps shared references and cycles. */
static int encode_if_seen(encoder *e, int idx, lua_Integer *id) {
  lua_State *L = e->L;
  if (!e->refs_made) take_refs_table(e);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->refs) == LUA_TNUMBER) {
    put_byte(e, T_REF);
    put_varint(e, (uint64_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, *id = e->next_id++);
  lua_rawset(L, e->refs);
  return 0;
}

static int encode_if_named(encoder *e, int idx, int rebuild) {
  lua_State *L = e->L;
  size_t len;
  const char *record;
  if ((rebuild && !e->names_fresh) || lua_isnil(L, e->names)) {
    lmp__names_push_map(L, rebuild);
    lua_replace(L, e->names);
    e->names_fresh = rebuild;
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->names) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  record = lua_tolstring(L, -1, &len);
  put_byte(e, T_NAMED);
  put_string(e, record, len);
  lua_pop(L, 1);
  return 1;
}

static int enter(encoder *e) {
  if (++e->depth > e->max_depth)
    return refuse(e, "a value nested deeper than 200 levels",
                  "flatten it, or send it in parts");
  luaL_checkstack(e->L, 8, "lmp: encoding");
  return 0;
}

/* One pass of lua_next: the run of keys 1, 2, 3 ... it meets first is the
 * array part, sent as bare values; every other pair follows as key, value.
 * (Lua's traversal visits the array part first, in order. Relying on
 * lua_rawlen instead would send every slot up to a border, and a border of
 * a sparse table can be 2^26 for 50 keys.) */
/* An object whose metatable has __lmp_nosend (a string saying why and what
 * to do instead) is refused by name: a pool captured by a function's
 * upvalue says "lmp.Pool", not what is deep inside it. */
static int refuse_if_not_sendable(encoder *e, int idx) {
  lua_State *L = e->L;
  char what[96];
  if (luaL_getmetafield(L, idx, "__lmp_nosend") != LUA_TSTRING) return 0;
  if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
    snprintf(what, sizeof what, "%.80s", lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    snprintf(what, sizeof what, "%s", luaL_typename(L, idx));
  }
  /* The reason stays on the stack, anchored until the error is built. */
  refuse(e, what, lua_tostring(L, -1));
  return -1;
}

static int encode_table(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_Integer id, next_index = 1;
  uint32_t array_count = 0, hash_count = 0;
  size_t counts_at;
  int has_meta, key, in_array = 1;
  if (lua_topointer(L, idx) == e->globals) {
    put_byte(e, T_GLOBALS);
    return 0;
  }
  if (encode_if_seen(e, idx, &id) || encode_if_named(e, idx, 0)) return 0;
  if (refuse_if_not_sendable(e, idx)) return -1;
  if (enter(e)) return -1;
  has_meta = lua_getmetatable(L, idx);
  put_byte(e, has_meta ? T_TABLE_MT : T_TABLE);
  counts_at = put_u32_placeholder(e);
  put_u32_placeholder(e);
  lua_pushnil(L);
  key = lua_gettop(L);
  while (lua_next(L, idx)) {
    if (in_array && lua_isinteger(L, key) && lua_tointeger(L, key) == next_index &&
        array_count < UINT32_MAX) {
      next_index++;
      array_count++;
    } else {
      in_array = 0;
      if (hash_count == UINT32_MAX)
        return refuse(e, "a table with 2^32 keys", "split it");
      hash_count++;
      if (encode_value(e, key)) {
        path_prepend(e, "[<a key>]");
        return -1;
      }
    }
    if (encode_value(e, key + 1)) {
      path_prepend_key(e, key);
      return -1;
    }
    lua_pop(L, 1);
  }
  patch_u32(e, counts_at, array_count);
  patch_u32(e, counts_at + 4, hash_count);
  if (has_meta) {
    if (encode_value(e, lua_gettop(L))) {
      path_prepend(e, "(metatable)");
      return -1;
    }
    lua_pop(L, 1);
  }
  e->depth--;
  return 0;
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return lmp__buffer_append(((encoder *)ud)->out, p, n);
}

static int encode_function(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_Integer id;
  lua_Debug ar;
  size_t length_at;
  int i;
  unsigned char header[5] = {LUA_VERSION_NUM & 0xff, LUA_VERSION_NUM >> 8,
                             (unsigned char)sizeof(void *),
                             (unsigned char)sizeof(lua_Integer),
                             (unsigned char)sizeof(lua_Number)};
  if (encode_if_seen(e, idx, &id) || encode_if_named(e, idx, 0)) return 0;
  if (lua_iscfunction(L, idx)) {
    if (encode_if_named(e, idx, 1)) return 0;
    return refuse(e, "a C function",
                  "reach it through a module in package.loaded, or name it "
                  "with lmp.register(name, fn) in both processes");
  }
  if (enter(e)) return -1;
  put_byte(e, T_FUNCTION);
  put(e, header, sizeof header);
  length_at = put_u32_placeholder(e);
  lua_pushvalue(L, idx);
  if (lua_dump(L, dump_writer, e, 0) != 0) out_of_memory(e);
  lua_pop(L, 1);
  if (e->out->len - length_at - 4 > UINT32_MAX)
    return refuse(e, "a function over 4 GB of bytecode", "split it");
  patch_u32(e, length_at, (uint32_t)(e->out->len - length_at - 4));
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  put_byte(e, ar.nups);
  if (ar.nups > 0 && lua_isnil(L, e->upvalues)) {
    lua_newtable(L);
    lua_replace(L, e->upvalues);
  }
  for (i = 1; i <= ar.nups; i++) {
    const char *name;
    lua_pushlightuserdata(L, lua_upvalueid(L, idx, i));
    if (lua_rawget(L, e->upvalues) == LUA_TNUMBER) {
      lua_Integer shared = lua_tointeger(L, -1);
      put_byte(e, T_UPVALUE_REF);
      put_varint(e, (uint64_t)(shared >> 8));
      put_byte(e, (unsigned char)(shared & 0xff));
      lua_pop(L, 1);
      continue;
    }
    lua_pop(L, 1);
    lua_pushlightuserdata(L, lua_upvalueid(L, idx, i));
    lua_pushinteger(L, id * 256 + i);
    lua_rawset(L, e->upvalues);
    name = lua_getupvalue(L, idx, i);
    if (encode_value(e, lua_gettop(L))) {
      char part[80];
      if (name && *name)
        snprintf(part, sizeof part, "(upvalue '%.40s')", name);
      else
        snprintf(part, sizeof part, "(upvalue %d)", i);
      path_prepend(e, part);
      return -1;
    }
    lua_pop(L, 1);
  }
  e->depth--;
  return 0;
}

static int encode_userdata(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_Integer id;
  if (encode_if_seen(e, idx, &id) || encode_if_named(e, idx, 0)) return 0;
  if (refuse_if_not_sendable(e, idx)) return -1;
  if (luaL_getmetafield(L, idx, "__lmp_serialize") != LUA_TNIL) {
    if (enter(e)) return -1;
    lua_pushvalue(L, idx);
    lua_call(L, 1, 2);
    if (lua_type(L, -2) != LUA_TSTRING)
      return refuse(e, "userdata whose __lmp_serialize returned no name",
                    "return the name of a constructor given to lmp.register, "
                    "then the data to call it with");
    put_byte(e, T_CUSTOM);
    {
      size_t len;
      const char *name = lua_tolstring(L, -2, &len);
      put_string(e, name, len);
    }
    if (encode_value(e, lua_gettop(L))) {
      path_prepend(e, "(__lmp_serialize data)");
      return -1;
    }
    lua_pop(L, 2);
    e->depth--;
    return 0;
  }
  if (encode_if_named(e, idx, 1)) return 0;
  {
    char what[96];
    if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING)
      snprintf(what, sizeof what, "userdata (%.60s)", lua_tostring(L, -1));
    else
      snprintf(what, sizeof what, "userdata");
    return refuse(e, what, "open it inside the worker, or give it a "
                           "__lmp_serialize metamethod");
  }
}

/* The smallest encoding that keeps the subtype and every bit. Written
 * into room made for the longest (9 bytes), without a check per byte. */
static void put_integer(encoder *e, lua_Integer v) {
  unsigned char *b;
  if (e->out->cap - e->out->len < 9 && lmp__buffer_reserve(e->out, 9) != 0) out_of_memory(e);
  b = (unsigned char *)e->out->data + e->out->len;
  if (v >= INT8_MIN && v <= INT8_MAX) {
    b[0] = T_INT8;
    b[1] = (unsigned char)(int8_t)v;
    e->out->len += 2;
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    int32_t v32 = (int32_t)v;
    b[0] = T_INT32;
    memcpy(b + 1, &v32, 4);
    e->out->len += 5;
  } else {
    int64_t v64 = (int64_t)v;
    b[0] = T_INT64;
    memcpy(b + 1, &v64, 8);
    e->out->len += 9;
  }
}

static void encode_number(encoder *e, int idx) {
  lua_State *L = e->L;
  unsigned char *b;
  double d;
  if (lua_isinteger(L, idx)) {
    put_integer(e, lua_tointeger(L, idx));
    return;
  }
  if (e->out->cap - e->out->len < 9 && lmp__buffer_reserve(e->out, 9) != 0) out_of_memory(e);
  b = (unsigned char *)e->out->data + e->out->len;
  d = (double)lua_tonumber(L, idx);
  b[0] = T_FLOAT;
  memcpy(b + 1, &d, 8);
  e->out->len += 9;
}

static int encode_value(encoder *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      put_byte(e, T_NIL);
      return 0;
    case LUA_TBOOLEAN:
      put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      return 0;
    case LUA_TNUMBER:
      encode_number(e, idx);
      return 0;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      put_byte(e, T_STRING);
      if (e->pieces && len >= LMP_LONG_STRING) {
        /* Left out of the buffer: the caller joins it in, a single copy. */
        lua_Integer n;
        if (lua_isnil(L, e->pieces)) {
          lua_newtable(L);
          lua_replace(L, e->pieces);
        }
        n = (lua_Integer)lua_rawlen(L, e->pieces);
        put_varint(e, len);
        lua_pushinteger(L, (lua_Integer)e->out->len);
        lua_rawseti(L, e->pieces, n + 1);
        lua_pushvalue(L, idx);
        lua_rawseti(L, e->pieces, n + 2);
        return 0;
      }
      put_string(e, s, len);
      return 0;
    }
    case LUA_TTABLE:
      return encode_table(e, idx);
    case LUA_TFUNCTION:
      return encode_function(e, idx);
    case LUA_TUSERDATA:
      return encode_userdata(e, idx);
    case LUA_TLIGHTUSERDATA:
      return refuse(e, "light userdata",
                    "a pointer means nothing in another process; send the "
                    "data it points to");
    case LUA_TTHREAD:
      return refuse(e, "a coroutine",
                    "coroutines cannot cross processes; send the function "
                    "that starts it");
    default:
      return refuse(e, luaL_typename(L, idx), "it cannot be sent");
  }
}

int lmp__encode(lua_State *L, int idx, lmp_buffer *out, const char *root) {
  return lmp__encode_pieces(L, idx, out, root, 0);
}

/* What every encoding starts with: the encoder, its three lazy slots on
 * the stack, and the format's version byte. */
static void encoder_start(encoder *e, lua_State *L, lmp_buffer *out, int pieces) {
  memset(e, 0, sizeof *e);
  e->pieces = pieces ? lua_absindex(L, pieces) : 0;
  e->L = L;
  e->out = out;
  e->path_start = sizeof e->path - 1;
  e->next_id = 1;
  e->max_depth = LMP_MAX_DEPTH;
  luaL_checkstack(L, 16, "lmp: encoding");
  /* Three slots filled when first needed: plain data needs none of them. */
  lua_pushnil(L);
  e->refs = lua_gettop(L);
  lua_pushnil(L); /* the upvalue table, made by the first function met */
  e->upvalues = lua_gettop(L);
  lua_pushnil(L);
  e->names = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  e->globals = lua_topointer(L, -1);
  lua_pop(L, 1);
  put_byte(e, LMP_FORMAT_VERSION);
}

/* Ends an encoding: on a refusal, pushes the lmp.Error naming the path. */
static int encoder_finish(encoder *e, int status, int top, const char *root) {
  lua_State *L = e->L;
  give_back_refs_table(e);
  lua_settop(L, top);
  if (status != 0) {
    const char *path = e->path + e->path_start;
    e->path[sizeof e->path - 1] = '\0';
    if (!*root && *path == '.' && path[1] != '.') path++;
    if (!*root && !*path)
      lua_pushfstring(L, "cannot send %s: %s", e->what, e->fix);
    else
      lua_pushfstring(L, "cannot send %s at %s%s: %s", e->what, root, path, e->fix);
    lmp__push_error(L, "serialize", lua_tostring(L, -1));
    lua_pushstring(L, root);
    lua_pushstring(L, path);
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, e->what);
    lua_setfield(L, -2, "what");
    lua_pushstring(L, e->fix);
    lua_setfield(L, -2, "fix");
    lua_remove(L, -2);
  }
  return status;
}

int lmp__encode_pieces(lua_State *L, int idx, lmp_buffer *out, const char *root,
                       int pieces) {
  return lmp__encode_message(L, idx, out, root, pieces, 0);
}

int lmp__encode_message(lua_State *L, int idx, lmp_buffer *out, const char *root,
                        int pieces, int envelope) {
  encoder e;
  int top = lua_gettop(L);
  if (envelope < 0 || envelope > LMP_ENVELOPE_DEPTH) luaL_error(L, "lmp: bad envelope depth");
  idx = lua_absindex(L, idx);
  encoder_start(&e, L, out, pieces);
  e.max_depth += envelope;
  return encoder_finish(&e, encode_value(&e, idx), top, root);
}

void lmp__encode_task_message(lua_State *L, lmp_buffer *out, lua_Integer id,
                              lua_Integer function_id, const char *mode) {
  encoder e;
  size_t at;
  memset(&e, 0, sizeof e);
  e.L = L;
  e.out = out;
  put_byte(&e, LMP_FORMAT_VERSION);
  put_byte(&e, T_TABLE);
  at = put_u32_placeholder(&e);
  put_u32_placeholder(&e);
  patch_u32(&e, at, 7);
  patch_u32(&e, at + 4, 0);
  put_byte(&e, T_STRING);
  put_string(&e, "task", 4);
  put_integer(&e, id);
  put_integer(&e, function_id);
  put_byte(&e, T_FALSE);
  put_byte(&e, T_STRING);
  put_string(&e, mode, strlen(mode));
  put_byte(&e, T_FALSE);
  put_byte(&e, T_FALSE);
}

int lmp__encode_list(lua_State *L, int idx, lua_Integer first, lua_Integer count,
                     lua_Integer name_first, lmp_buffer *out, const char *root, int pieces) {
  encoder e;
  int top = lua_gettop(L), status = 0;
  lua_Integer i;
  size_t at;
  idx = lua_absindex(L, idx);
  encoder_start(&e, L, out, pieces);
  /* The list is a table on arrival, and a decoder numbers it first (id 1):
   * the items' ids start after it, as one dumps of the same list would
   * number them, so shared references and upvalues point where they must. */
  e.next_id = 2;
  if (count < 0 || count > UINT32_MAX) luaL_error(L, "lmp: list too long to send");
  put_byte(&e, T_TABLE);
  at = put_u32_placeholder(&e);
  put_u32_placeholder(&e);
  patch_u32(&e, at, (uint32_t)count);
  patch_u32(&e, at + 4, 1);
  for (i = 0; i < count && status == 0; i++) {
    /* Numbers, the usual items of a big map, skip the general path. */
    if (lua_rawgeti(L, idx, first + i) == LUA_TNUMBER) encode_number(&e, -1);
    else status = encode_value(&e, lua_gettop(L));
    lua_pop(L, 1);
    if (status != 0) {
      char part[32];
      snprintf(part, sizeof part, "[%lld]", (long long)(name_first + i));
      path_prepend(&e, part);
    }
  }
  if (status == 0) {
    put_byte(&e, T_STRING);
    put_string(&e, "n", 1);
    lua_pushinteger(L, count);
    encode_value(&e, lua_gettop(L));
  }
  return encoder_finish(&e, status, top, root);
}

/* ---- decoding ---------------------------------------------------------- */

typedef struct decoder {
  lua_State *L;
  const unsigned char *start, *p, *end;
  int refs; /* stack index: id -> object */
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
  uint64_t len = get_varint(d);
  if (len > (uint64_t)(d->end - d->p)) malformed(d, "length past the end");
  return (size_t)len;
}

static lua_Integer new_id(decoder *d) {
  return d->next_id++;
}

/* The table of objects decoded so far (id -> object) is made on the first
 * one, and reused across decodings as the encoder's is: most messages are
 * a number or one small table. */
static const char decode_refs_key = 'D';

static void remember(decoder *d, lua_Integer id) {
  lua_State *L = d->L;
  if (lua_isnil(L, d->refs)) take_spare_table(L, &decode_refs_key, d->refs);
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, id);
}

/* Pushes object `id`, which the input may only name once decoded. */
static void push_ref(decoder *d, uint64_t id, const char *what) {
  if (id == 0 || id >= (uint64_t)d->next_id || !lua_istable(d->L, d->refs)) malformed(d, what);
  lua_rawgeti(d->L, d->refs, (lua_Integer)id);
}

static void give_back_decode_refs(decoder *d) {
  lua_State *L = d->L;
  lua_Integer i;
  if (!lua_istable(L, d->refs) || d->next_id - 1 > 64) return;
  for (i = 1; i < d->next_id; i++) {
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
    decode_value(d);
    if (lua_isnil(L, -1)) malformed(d, "nil table key");
    if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
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
  /* Only the shape lmp__encode_list makes: a table of `count` values and
   * one more key (n), no metatable. */
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
  luaL_checkstack(L, 16, "lmp: decoding");
  lua_pushnil(L); /* refs, made by the first object */
  d.refs = lua_gettop(L);
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

static void decode_bytes(lua_State *L, const char *p, size_t n, int flags, int max_depth);

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
  luaL_checkstack(L, 16, "lmp: decoding");
  lua_pushnil(L); /* refs, made by the first object */
  d.refs = lua_gettop(L);
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
