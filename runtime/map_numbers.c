/* A map's chunk of numbers, run in the worker with no table either way
 * (core.map_numbers): its items are read one by one from the number array
 * the chunk came as, and the results, while they are numbers of one
 * subtype, are written straight into the number array of the answer. A
 * million items of a map of 1..N otherwise cost a table write each to
 * decode, a table read and write each in the task loop and a table read
 * each to encode the answer, more than the call of the function itself.
 * A result of another kind (or an item that fails) turns the answer into a
 * table from there on: values {n = count, ...}, as the Lua loop makes it. */
#include <string.h>

#include "value_tags.h"
#include "worker.h"

enum { FIRST, BLOCK_INT, BLOCK_FLOAT, TABLE };

/* Room before the results' 8-byte slots for the longest header: the
 * version byte, the tag, the count and the width. */
#define HEADER_ROOM 8

typedef struct run_state {
  const unsigned char *items; /* the items' values, in the argument string */
  uint32_t count, next;       /* items; the next to run, from 0 */
  unsigned width;             /* bytes an item; 0 for floats */
  int mode;                   /* where results go */
  int64_t low, high;          /* the range of the integer results so far */
  unsigned char *slots;       /* BLOCK_*: result k at slots + 8 k */
} run_state;

static void push_item(lua_State *L, const run_state *s, uint32_t i) {
  const unsigned char *v = s->items + (size_t)i * (s->width ? s->width : 8);
  switch (s->width) {
    case 0: {
      double d;
      memcpy(&d, v, 8);
      lua_pushnumber(L, (lua_Number)d);
      return;
    }
    case 1: lua_pushinteger(L, (int8_t)*v); return;
    case 2: {
      int16_t w;
      memcpy(&w, v, 2);
      lua_pushinteger(L, w);
      return;
    }
    case 4: {
      int32_t w;
      memcpy(&w, v, 4);
      lua_pushinteger(L, w);
      return;
    }
    default: {
      int64_t w;
      memcpy(&w, v, 8);
      lua_pushinteger(L, (lua_Integer)w);
      return;
    }
  }
}

/* The results so far, `filled` of them, move to a table {n = count, ...},
 * pushed and kept in holder[1]; results go there from now on. */
static void to_table(lua_State *L, run_state *s, int holder, uint32_t filled) {
  uint32_t k;
  lua_createtable(L, (int)s->count, 1);
  lua_pushinteger(L, (lua_Integer)s->count);
  lua_setfield(L, -2, "n");
  for (k = 0; k < filled; k++) {
    if (s->mode == BLOCK_FLOAT) {
      double d;
      memcpy(&d, s->slots + (size_t)k * 8, 8);
      lua_pushnumber(L, (lua_Number)d);
    } else {
      int64_t v;
      memcpy(&v, s->slots + (size_t)k * 8, 8);
      lua_pushinteger(L, (lua_Integer)v);
    }
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, holder, 1);
  s->mode = TABLE;
}

/* Runs items from s->next on, under the caller's protected call:
 * (state, fn, holder). An item that raises leaves s->next just past it. */
static int run_items(lua_State *L) {
  run_state *s = lua_touserdata(L, 1);
  lua_settop(L, 3);
  lua_rawgeti(L, 3, 1); /* 4: the values table, once there is one */
  while (s->next < s->count) {
    uint32_t i = s->next++;
    lua_pushvalue(L, 2);
    push_item(L, s, i);
    lua_call(L, 1, 1);
    if (s->mode != TABLE) {
      if (lua_type(L, -1) == LUA_TNUMBER) {
        int integer = lua_isinteger(L, -1);
        if (s->mode == FIRST) s->mode = integer ? BLOCK_INT : BLOCK_FLOAT;
        if (integer && s->mode == BLOCK_INT) {
          int64_t v = (int64_t)lua_tointegerx(L, -1, NULL);
          memcpy(s->slots + (size_t)i * 8, &v, 8);
          if (v < s->low) s->low = v;
          if (v > s->high) s->high = v;
          lua_settop(L, 4);
          continue;
        }
        if (!integer && s->mode == BLOCK_FLOAT) {
          double d = (double)lua_tonumberx(L, -1, NULL);
          memcpy(s->slots + (size_t)i * 8, &d, 8);
          lua_settop(L, 4);
          continue;
        }
      }
      to_table(L, s, 3, i);
      lua_replace(L, 4);
    }
    lua_rawseti(L, 4, (lua_Integer)i + 1);
  }
  return 0;
}

static unsigned width_of(int64_t v) {
  if (v >= INT8_MIN && v <= INT8_MAX) return 1;
  if (v >= INT16_MIN && v <= INT16_MAX) return 2;
  if (v >= INT32_MIN && v <= INT32_MAX) return 4;
  return 8;
}

/* Pushes the results, all in the block, as the bytes of one number array
 * (what lmp__encode_list makes of them). */
static void push_block(lua_State *L, run_state *s) {
  unsigned width = 8;
  uint32_t k, count = s->count;
  size_t header = 6;
  unsigned char *start;
  if (s->mode == BLOCK_INT) {
    unsigned low = width_of(s->low), high = width_of(s->high);
    width = low > high ? low : high;
    header = 7;
    /* Narrowed in place (little-endian: the low bytes come first). */
    if (width < 8)
      for (k = 0; k < count; k++) memmove(s->slots + (size_t)k * width, s->slots + (size_t)k * 8, width);
  }
  start = s->slots - header;
  start[0] = LMP_FORMAT_VERSION;
  start[1] = s->mode == BLOCK_INT ? T_INT_ARRAY : T_FLOAT_ARRAY;
  memcpy(start + 2, &count, 4);
  if (s->mode == BLOCK_INT) start[6] = (unsigned char)width;
  lua_pushlstring(L, (const char *)start, header + (size_t)count * width);
}

/* core.map_numbers(fn, items, handler) -> results, failures: a map task
 * whose items came as the bytes of one number array (items, a string:
 * see core.channel_recv), each item fn(item), each call protected with
 * handler as xpcall's. results is the bytes of the answer's number array
 * when every result was a number of one subtype, else the table {n =
 * count, ...} of them; failures is nil, or item index -> what handler
 * returned for it (its result is nil). */
static int core_map_numbers(lua_State *L) {
  size_t n, header;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 2, &n);
  run_state s;
  lmp_buffer *out;
  uint32_t count;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  memset(&s, 0, sizeof s);
  luaL_argcheck(L, n >= 6 && p[0] == LMP_FORMAT_VERSION && (p[1] == T_INT_ARRAY || p[1] == T_FLOAT_ARRAY),
                2, "not a number array");
  memcpy(&count, p + 2, 4);
  header = p[1] == T_INT_ARRAY ? 7 : 6;
  s.width = p[1] == T_INT_ARRAY && n >= 7 ? p[6] : 0;
  luaL_argcheck(L, n >= header && (p[1] == T_FLOAT_ARRAY || s.width == 1 || s.width == 2 ||
                                   s.width == 4 || s.width == 8) &&
                       (uint64_t)count * (s.width ? s.width : 8) == n - header,
                2, "not a number array");
  s.items = p + header;
  s.count = count;
  lua_settop(L, 3);
  lua_createtable(L, 1, 0); /* 4: holder of the values table */
  lua_pushnil(L);           /* 5: the failures */
  out = lmp__take_encode_box(L); /* 6 */
  if (lmp__buffer_reserve(out, HEADER_ROOM + (size_t)count * 8) != 0)
    return luaL_error(L, "lmp: not enough memory for a task's results");
  s.slots = (unsigned char *)out->data + HEADER_ROOM;
  while (s.next < s.count) {
    lua_pushcfunction(L, run_items);
    lua_pushlightuserdata(L, &s);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 4);
    if (lua_pcall(L, 3, 0, 3) == LUA_OK) break;
    /* Item s.next (from 1) failed: its failure is kept, its result nil. */
    if (lua_isnil(L, 5)) {
      lua_newtable(L);
      lua_replace(L, 5);
    }
    lua_rawseti(L, 5, (lua_Integer)s.next);
    if (s.mode != TABLE) {
      to_table(L, &s, 4, s.next - 1);
      lua_pop(L, 1);
    }
  }
  if (s.mode == BLOCK_INT || s.mode == BLOCK_FLOAT) {
    push_block(L, &s);
  } else if (s.mode == TABLE) {
    lua_rawgeti(L, 4, 1);
  } else { /* no item */
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "n");
  }
  lmp__give_back_encode_box(L, 6);
  lua_pushvalue(L, 5);
  return 2;
}

static const luaL_Reg map_numbers_functions[] = {{"map_numbers", core_map_numbers}, {NULL, NULL}};

void lmp__open_map_numbers(lua_State *L) { luaL_setfuncs(L, map_numbers_functions, 0); }
