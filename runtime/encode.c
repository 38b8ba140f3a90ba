/* The value format, encoding: how a Lua value becomes bytes that another
 * process decodes (decode.c). value_format.md beside this file describes
 * the bytes. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "value_tags.h"

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

/* A string value (T_STRING, its length, its bytes) written into room made
 * once for all three: tables of many string keys (a result of counts)
 * spend most of their encoding here. */
static void put_tagged_string(encoder *e, const char *s, size_t len) {
  unsigned char *b;
  size_t v = len;
  if (e->out->cap - e->out->len < len + 11 && lmp__buffer_reserve(e->out, len + 11) != 0)
    out_of_memory(e);
  b = (unsigned char *)e->out->data + e->out->len;
  *b++ = T_STRING;
  while (v >= 0x80) {
    *b++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *b++ = (unsigned char)v;
  memcpy(b, s, len);
  e->out->len = (size_t)((char *)b + len - e->out->data);
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

static void take_refs_table(encoder *e) {
  lmp__take_spare_table(e->L, &refs_cache_key, e->refs);
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

static int encode_custom(encoder *e, int idx);

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
  /* An object that says how it travels (an lmp.Lock: its fields include
   * methods bound to this process's mapping). */
  if (luaL_getmetafield(L, idx, "__lmp_serialize") != LUA_TNIL) return encode_custom(e, idx);
  if (enter(e)) return -1;
  has_meta = lua_getmetatable(L, idx);
  if (!has_meta) {
    int written = lmp__encode_number_array(L, idx, e->out);
    if (written < 0) out_of_memory(e);
    if (written) {
      e->depth--;
      return 0;
    }
  }
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

/* A table or userdata whose metatable has __lmp_serialize (pushed on the
 * stack) goes as the name and data it returns. */
static int encode_custom(encoder *e, int idx) {
  lua_State *L = e->L;
  size_t len;
  const char *name;
  if (enter(e)) return -1;
  lua_pushvalue(L, idx);
  lua_call(L, 1, 2);
  if (lua_type(L, -2) != LUA_TSTRING)
    return refuse(e, "a value whose __lmp_serialize returned no name",
                  "return the name of a constructor given to lmp.register, "
                  "then the data to call it with");
  put_byte(e, T_CUSTOM);
  name = lua_tolstring(L, -2, &len);
  put_string(e, name, len);
  if (encode_value(e, lua_gettop(L))) {
    path_prepend(e, "(__lmp_serialize data)");
    return -1;
  }
  lua_pop(L, 2);
  e->depth--;
  return 0;
}

static int encode_userdata(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_Integer id;
  if (encode_if_seen(e, idx, &id) || encode_if_named(e, idx, 0)) return 0;
  if (refuse_if_not_sendable(e, idx)) return -1;
  if (luaL_getmetafield(L, idx, "__lmp_serialize") != LUA_TNIL) return encode_custom(e, idx);
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

/* A number, in the smallest encoding that keeps its subtype and every bit
 * (numbers.c). */
static void encode_number(encoder *e, int idx) {
  if (lmp__put_number(e->L, idx, e->out) != 0) out_of_memory(e);
}

static void put_integer(encoder *e, lua_Integer v) {
  if (lmp__put_integer(e->out, v) != 0) out_of_memory(e);
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
      if (!e->pieces || len < LMP_LONG_STRING) {
        put_tagged_string(e, s, len);
        return 0;
      }
      put_byte(e, T_STRING);
      {
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
  /* A number alone (a quick task's answer is its id) needs none of the
   * encoder's tables: the version byte and the number. */
  if (lua_type(L, idx) == LUA_TNUMBER) {
    unsigned char version = LMP_FORMAT_VERSION;
    if (lmp__buffer_append(out, &version, 1) != 0 || lmp__put_number(L, idx, out) != 0)
      luaL_error(L, "lmp: not enough memory to encode the value");
    return 0;
  }
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
                     lua_Integer name_first, lmp_buffer *out, const char *root, int pieces,
                     int envelope) {
  encoder e;
  int top = lua_gettop(L), status = 0;
  lua_Integer i;
  size_t at;
  idx = lua_absindex(L, idx);
  if (envelope < 0 || envelope > LMP_ENVELOPE_DEPTH) luaL_error(L, "lmp: bad envelope depth");
  /* A list of numbers only, a map's usual chunk and its answer, is one
   * number array, its count its n (lmp__decode_list): 121 instructions an
   * item to encode instead of 178 (callgrind), nothing to dispatch on per
   * item when decoding, and a byte or two an item where a tag per item
   * took up to five. Nothing in it can be refused or refer to anything. */
  if (envelope == 0 && count >= 0 && count <= UINT32_MAX) {
    size_t start = out->len;
    unsigned char version = LMP_FORMAT_VERSION;
    int r = lmp__buffer_append(out, &version, 1) != 0
                ? -1 : lmp__encode_number_list(L, idx, first, count, out);
    if (r < 0) luaL_error(L, "lmp: not enough memory to encode the value");
    if (r > 0) return 0;
    out->len = start;
  }
  encoder_start(&e, L, out, pieces);
  e.max_depth += envelope;
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
