/* Payloads: values encoded once and sent as they are, the encode buffers
 * they are made in, and the bindings that encode and decode (core.dumps,
 * core.loads, core.encode, core.encode_list). */
#include <limits.h>
#include <string.h>

#include "value_tags.h"

#define ENCODE_BOX_META "lmp.EncodeBuffer"
#define SPARE_KEEP 65536 /* a spare buffer bigger than this is freed */

/* The registry slot of the state's spare encode box, emptied while an
 * encoding uses it: an encoding started meanwhile (an __lmp_serialize
 * that sends) makes a box of its own. */
static const char spare_box_key = 'b';

static int encode_box_gc(lua_State *L) {
  lmp__buffer_free(lua_touserdata(L, 1));
  return 0;
}

static lmp_buffer *push_encode_box(lua_State *L) {
  lmp_buffer *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, ENCODE_BOX_META)) {
    lua_pushcfunction(L, encode_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

lmp_buffer *lmp__take_encode_box(lua_State *L) {
  lmp_buffer *b;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &spare_box_key) == LUA_TUSERDATA) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &spare_box_key);
    b = lua_touserdata(L, -1);
    b->len = 0;
    return b;
  }
  lua_pop(L, 1);
  return push_encode_box(L);
}

void lmp__give_back_encode_box(lua_State *L, int idx) {
  lmp_buffer *b = lua_touserdata(L, idx);
  if (b->cap > SPARE_KEEP) lmp__buffer_free(b);
  b->len = 0;
  lua_pushvalue(L, idx);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &spare_box_key);
}

/* The same with the spare box kept in the upvalue at `slot` (see
 * core.encode_list). */
static lmp_buffer *take_encode_box_at(lua_State *L, int slot) {
  lmp_buffer *b;
  if (lua_type(L, slot) == LUA_TUSERDATA) {
    lua_pushvalue(L, slot);
    lua_pushnil(L);
    lua_replace(L, slot);
    b = lua_touserdata(L, -1);
    b->len = 0;
    return b;
  }
  return push_encode_box(L);
}

static void give_back_encode_box_at(lua_State *L, int idx, int slot) {
  lmp_buffer *b = lua_touserdata(L, idx);
  if (b->cap > SPARE_KEEP) lmp__buffer_free(b);
  b->len = 0;
  lua_pushvalue(L, idx);
  lua_replace(L, slot);
}

/* core.dumps(value [, root [, envelope]]) -> string. Long strings in the
 * value are not copied into the buffer: the result is joined from the
 * buffer's pieces and the strings themselves, so each byte of them is
 * copied once. `envelope` (default 0) is the number of levels of a message
 * around the values it carries (see LMP_ENVELOPE_DEPTH): checking a
 * message before sending it, they do not count against the nesting limit. */
static int payload_dumps(lua_State *L) {
  const char *root;
  lmp_buffer *b;
  lua_Integer n, i, envelope;
  size_t from = 0;
  luaL_checkany(L, 1);
  root = luaL_optstring(L, 2, "");
  envelope = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, envelope >= 0 && envelope <= LMP_ENVELOPE_DEPTH, 3, "envelope out of range");
  lua_settop(L, 2);
  lua_pushnil(L); /* 3: the long strings left out */
  b = lmp__take_encode_box(L);
  if (lmp__encode_message(L, 1, b, root, 3, (int)envelope) != 0) return lua_error(L);
  if (lua_isnil(L, 3)) {
    lua_pushlstring(L, b->data, b->len);
    lmp__give_back_encode_box(L, 4);
    return 1;
  }
  n = (lua_Integer)lua_rawlen(L, 3);
  luaL_checkstack(L, (int)(n + 4), "lmp: too many long strings");
  for (i = 1; i <= n; i += 2) {
    size_t at;
    lua_rawgeti(L, 3, i);
    at = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushlstring(L, b->data + from, at - from);
    lua_rawgeti(L, 3, i + 1);
    from = at;
  }
  lua_pushlstring(L, b->data + from, b->len - from);
  lua_concat(L, (int)n + 1);
  lmp__give_back_encode_box(L, 4);
  return 1;
}

/* ---- payloads: values encoded once, sent as they are ------------------ */

/* A payload is plain memory owned by Lua, with no finalizer to run: the
 * collector frees it like a string. Its metatable is found by address. */
static const char payload_meta_key = 'p';

void *lmp__to_class(lua_State *L, int idx, const void *key) {
  void *p = lua_touserdata(L, idx);
  int same = 0;
  if (p && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  return same ? p : NULL;
}

void *lmp__to_class_at(lua_State *L, int idx, int meta, const void *key) {
  void *p;
  int same;
  if (lua_type(L, meta) != LUA_TTABLE) return lmp__to_class(L, idx, key);
  p = lua_touserdata(L, idx);
  if (p == NULL || !lua_getmetatable(L, idx)) return NULL;
  same = lua_rawequal(L, -1, meta);
  lua_pop(L, 1);
  return same ? p : NULL;
}

lmp_payload *lmp__check_payload(lua_State *L, int idx) {
  lmp_payload *payload = lmp__to_class(L, idx, &payload_meta_key);
  if (payload == NULL) luaL_typeerror(L, idx, "lmp payload");
  return payload;
}

lmp_payload *lmp__check_payload_at(lua_State *L, int idx, int meta) {
  lmp_payload *payload = lmp__to_class_at(L, idx, meta, &payload_meta_key);
  if (payload == NULL) luaL_typeerror(L, idx, "lmp payload");
  return payload;
}

size_t lmp__payload_bufs(const lmp_payload *payload, uv_buf_t *bufs) {
  const char *bytes = LMP_PAYLOAD_BYTES(payload);
  size_t i, n = 0, from = 0;
  for (i = 0; i < payload->piece_count; i++) {
    const lmp_piece *piece = &payload->pieces[i];
    if (piece->at > from) bufs[n++] = uv_buf_init((char *)bytes + from, (unsigned)(piece->at - from));
    bufs[n++] = uv_buf_init((char *)piece->data, (unsigned)piece->len);
    from = piece->at;
  }
  if (payload->bytes_len > from)
    bufs[n++] = uv_buf_init((char *)bytes + from, (unsigned)(payload->bytes_len - from));
  return n;
}

static int payload_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lmp__check_payload(L, 1)->length);
  return 1;
}

/* The payloads' metatable, made on the first need. */
void lmp__push_payload_meta(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &payload_meta_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, payload_len);
    lua_setfield(L, -2, "__len");
    lua_pushliteral(L, "lmp.Payload");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &payload_meta_key);
  }
}

/* A payload of the bytes in b and the long strings at `pieces`, without
 * its metatable. */
static lmp_payload *push_bare_payload(lua_State *L, const lmp_buffer *b, int pieces) {
  size_t count = 0, i;
  lmp_payload *payload;
  pieces = lua_absindex(L, pieces);
  if (!lua_isnil(L, pieces)) count = lua_rawlen(L, pieces) / 2;
  payload = lua_newuserdatauv(L, sizeof *payload + count * sizeof(lmp_piece) + b->len, 2);
  payload->length = payload->bytes_len = b->len;
  payload->descriptors = NULL;
  payload->piece_count = count;
  memcpy(LMP_PAYLOAD_BYTES(payload), b->data, b->len);
  for (i = 0; i < count; i++) {
    lmp_piece *piece = &payload->pieces[i];
    lua_rawgeti(L, pieces, (lua_Integer)(2 * i + 1));
    piece->at = (size_t)lua_tointeger(L, -1);
    lua_rawgeti(L, pieces, (lua_Integer)(2 * i + 2));
    piece->data = lua_tolstring(L, -1, &piece->len);
    payload->length += piece->len;
    lua_pop(L, 2);
  }
  if (count) {
    /* The user value keeps the strings the pieces point into alive. */
    lua_pushvalue(L, pieces);
    lua_setiuservalue(L, -2, 1);
  }
  return payload;
}

lmp_payload *lmp__push_payload(lua_State *L, const lmp_buffer *b, int pieces) {
  lmp_payload *payload = push_bare_payload(L, b, pieces);
  lmp__push_payload_meta(L);
  lua_setmetatable(L, -2);
  return payload;
}

/* Makes the box at `box` the payload's (at the top) when it holds
 * descriptors: they stay open as long as the payload may be sent. */
static void keep_descriptors(lua_State *L, int box) {
  lmp_descriptors *d = lua_touserdata(L, box);
  lmp_payload *payload = lua_touserdata(L, -1);
  if (d->n == 0) {
    lmp__give_back_descriptors(L, box);
    return;
  }
  lua_pushvalue(L, box);
  lua_setiuservalue(L, -2, 2);
  payload->descriptors = d;
}

/* core.encode(value [, root]) -> payload; refusals raise as dumps does. */
static int payload_encode(lua_State *L) {
  const char *root;
  lmp_buffer *b;
  lmp_descriptors *previous;
  int r;
  luaL_checkany(L, 1);
  root = luaL_optstring(L, 2, "");
  lua_settop(L, 2);
  lua_pushnil(L); /* 3: the long strings, written from where they are */
  b = lmp__take_encode_box(L);
  lmp__take_descriptors(L); /* 5: the descriptors its values hold */
  previous = lmp__descriptors_collect(lua_touserdata(L, 5));
  r = lmp__encode_pieces(L, 1, b, root, 3);
  lmp__descriptors_collect(previous);
  if (r != 0) return lua_error(L);
  lmp__push_payload(L, b, 3);
  keep_descriptors(L, 5);
  lmp__give_back_encode_box(L, 4);
  return 1;
}

/* core.loads(bytes [, functions [, metatables [, envelope]]]) -> value; as
 * core.dumps, `envelope` levels more may nest (what core.dumps made with
 * as many). */
static int payload_loads(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int flags = 0;
  lua_Integer envelope = luaL_optinteger(L, 4, 0);
  if (!lua_isnoneornil(L, 2) && !lua_toboolean(L, 2)) flags |= LMP_DECODE_DATA;
  if (!lua_isnoneornil(L, 3) && !lua_toboolean(L, 3)) flags |= LMP_DECODE_NO_METATABLES;
  luaL_argcheck(L, envelope >= 0 && envelope <= LMP_ENVELOPE_DEPTH, 4, "envelope out of range");
  lua_settop(L, 1);
  lmp__decode_enveloped(L, s, len, flags, (int)envelope);
  return 1;
}

/* core.encode_list(t, first, count [, name_first [, root [, envelope]]])
 * -> payload of {n = count, t[first], ..., t[first + count - 1]}: a chunk
 * of a map's input, or apply's arguments, encoded straight from where they
 * are. `envelope` (0 or 1): each item is an argument list lmp made (a
 * starmap task), whose level does not count against the limit.
 * It runs once per apply_async: its upvalues hold the payloads' metatable
 * (1) and its own spare encode box (2) and descriptor box (3), each taken
 * (the upvalue emptied) while an encoding uses it, so that a nested call
 * (an __lmp_serialize that sends) makes boxes of its own. Upvalues cost
 * less to reach than the registry slots the other encoders share. */
#define LIST_META lua_upvalueindex(1)
#define LIST_BOX lua_upvalueindex(2)
#define LIST_DESCRIPTORS lua_upvalueindex(3)
static int payload_encode_list(lua_State *L) {
  lua_Integer first = luaL_checkinteger(L, 2), count = luaL_checkinteger(L, 3);
  lua_Integer name_first = luaL_optinteger(L, 4, first);
  const char *root = luaL_optstring(L, 5, "args");
  lua_Integer envelope = luaL_optinteger(L, 6, 0);
  lmp_buffer *b;
  lmp_descriptors *previous;
  int r;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argcheck(L, envelope == 0 || envelope == 1, 6, "envelope must be 0 or 1");
  lua_settop(L, 5);
  lua_pushnil(L); /* 6: the long strings, written from where they are */
  b = take_encode_box_at(L, LIST_BOX); /* 7 */
  lmp__take_descriptors_at(L, LIST_DESCRIPTORS); /* 8: the descriptors its values hold */
  previous = lmp__descriptors_collect(lua_touserdata(L, 8));
  r = lmp__encode_list(L, 1, first, count, name_first, b, root, 6, (int)envelope);
  lmp__descriptors_collect(previous);
  if (r != 0) return lua_error(L);
  push_bare_payload(L, b, 6);
  lua_pushvalue(L, LIST_META);
  lua_setmetatable(L, -2);
  if (((lmp_descriptors *)lua_touserdata(L, 8))->n == 0) {
    lmp__give_back_descriptors_at(L, 8, LIST_DESCRIPTORS);
  } else {
    keep_descriptors(L, 8);
  }
  give_back_encode_box_at(L, 7, LIST_BOX);
  return 1;
}

/* core.plain_items(list, first, count) -> boolean: whether every item of
 * list[first .. first + count - 1] is nil, a boolean, a number or a
 * string, values whose encoding cannot be refused. A map whose items are
 * all plain sends its first tasks before encoding the rest: nothing it
 * sends early can turn out to belong to a call that fails. */
#define PLAIN_BATCH 64
static int payload_plain_items(lua_State *L) {
  lua_Integer first = luaL_checkinteger(L, 2), count = luaL_checkinteger(L, 3), i;
  int plain = 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  /* The values are popped a batch at a time, not one by one: a map of a
   * million numbers calls this on every item. */
  luaL_checkstack(L, PLAIN_BATCH, "lmp: checking items");
  for (i = 0; i < count && plain; i++) {
    switch (lua_rawgeti(L, 1, first + i)) {
      case LUA_TNIL: case LUA_TBOOLEAN: case LUA_TNUMBER: case LUA_TSTRING: break;
      default: plain = 0;
    }
    if (i % PLAIN_BATCH == PLAIN_BATCH - 1) lua_settop(L, 1);
  }
  lua_settop(L, 1);
  lua_pushboolean(L, plain);
  return 1;
}

/* core.slice_numbers(payload, from, count) -> the payload of items from ..
 * from + count - 1 (from 1) of a list encoded as one number array
 * (lmp__encode_list), or nil when the payload is not one: a map's queued
 * task cut in two (Pool:_split) without reading its items again. */
static int payload_slice_numbers(lua_State *L) {
  lmp_payload *payload = lmp__check_payload(L, 1), *part;
  lua_Integer from = luaL_checkinteger(L, 2), count = luaL_checkinteger(L, 3);
  const char *p = LMP_PAYLOAD_BYTES(payload);
  size_t header, width;
  uint32_t total, count32;
  char *q;
  if (payload->piece_count != 0 || payload->descriptors != NULL ||
      !lmp__is_number_list(p, payload->bytes_len)) {
    lua_pushnil(L);
    return 1;
  }
  header = p[1] == T_INT_ARRAY ? 7 : 6;
  width = p[1] == T_INT_ARRAY ? (unsigned char)p[6] : 8;
  memcpy(&total, p + 2, 4);
  luaL_argcheck(L, payload->bytes_len == header + (size_t)total * width, 1, "malformed number array");
  luaL_argcheck(L, from >= 1 && from <= (lua_Integer)total + 1, 2, "out of range");
  luaL_argcheck(L, count >= 0 && count <= (lua_Integer)total - from + 1, 3, "out of range");
  part = lua_newuserdatauv(L, sizeof *part + header + (size_t)count * width, 2);
  part->length = part->bytes_len = header + (size_t)count * width;
  part->descriptors = NULL;
  part->piece_count = 0;
  q = LMP_PAYLOAD_BYTES(part);
  memcpy(q, p, header);
  count32 = (uint32_t)count;
  memcpy(q + 2, &count32, 4);
  memcpy(q + header, p + header + (size_t)(from - 1) * width, (size_t)count * width);
  lmp__push_payload_meta(L);
  lua_setmetatable(L, -2);
  return 1;
}

/* core.new_table(narray, nhash): a table made at its final size, so that
 * filling a million results does not rehash it twenty times. */
static int payload_new_table(lua_State *L) {
  lua_Integer narray = luaL_checkinteger(L, 1), nhash = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, narray >= 0 && narray <= INT_MAX, 1, "size out of range");
  luaL_argcheck(L, nhash >= 0 && nhash <= INT_MAX, 2, "size out of range");
  lua_createtable(L, (int)narray, (int)nhash);
  return 1;
}

static const luaL_Reg payload_functions[] = {
    {"dumps", payload_dumps},   {"loads", payload_loads},
    {"encode", payload_encode},
    {"new_table", payload_new_table}, {"plain_items", payload_plain_items},
    {"slice_numbers", payload_slice_numbers},
    {NULL, NULL}};

void lmp__open_payload(lua_State *L) {
  luaL_setfuncs(L, payload_functions, 0);
  lmp__push_payload_meta(L);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushcclosure(L, payload_encode_list, 3);
  lua_setfield(L, -2, "encode_list");
}
