/* The value format's numbers: one number in the smallest encoding that
 * keeps its subtype and bits, and number arrays, a sequence table of only
 * floats or only integers written as one typed block (FLOAT_ARRAY,
 * INT_ARRAY in value_format.md) instead of a tag per value: a million
 * floats is one pass of 8-byte copies each way, a million small integers
 * a byte each. Called by encode.c, and by decode.c for the two array
 * tags. */
#include <stdint.h>
#include <string.h>

#include "value_tags.h"

/* Written into room made for the longest (9 bytes), without a check per
 * byte. */
int lmp__put_integer(lmp_buffer *out, lua_Integer v) {
  unsigned char *b;
  if (out->cap - out->len < 9 && lmp__buffer_reserve(out, 9) != 0) return -1;
  b = (unsigned char *)out->data + out->len;
  if (v >= INT8_MIN && v <= INT8_MAX) {
    b[0] = T_INT8;
    b[1] = (unsigned char)(int8_t)v;
    out->len += 2;
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    int32_t v32 = (int32_t)v;
    b[0] = T_INT32;
    memcpy(b + 1, &v32, 4);
    out->len += 5;
  } else {
    int64_t v64 = (int64_t)v;
    b[0] = T_INT64;
    memcpy(b + 1, &v64, 8);
    out->len += 9;
  }
  return 0;
}

int lmp__put_number(lua_State *L, int idx, lmp_buffer *out) {
  unsigned char *b;
  double d;
  if (lua_isinteger(L, idx)) return lmp__put_integer(out, lua_tointeger(L, idx));
  if (out->cap - out->len < 9 && lmp__buffer_reserve(out, 9) != 0) return -1;
  b = (unsigned char *)out->data + out->len;
  d = (double)lua_tonumber(L, idx);
  b[0] = T_FLOAT;
  memcpy(b + 1, &d, 8);
  out->len += 9;
  return 0;
}

/* Below this many values the general table encoding is as short. */
#define NUMBER_ARRAY_MIN 4

/* The narrowest width (1, 2, 4 or 8 bytes) that holds every integer from
 * lo to hi, as a signed number. */
static unsigned width_of(int64_t lo, int64_t hi) {
  if (lo >= INT8_MIN && hi <= INT8_MAX) return 1;
  if (lo >= INT16_MIN && hi <= INT16_MAX) return 2;
  if (lo >= INT32_MIN && hi <= INT32_MAX) return 4;
  return 8;
}

/* Narrows `count` int64 values at p to `width` bytes each, in place (each
 * write lands at or before what it reads). */
static void narrow(unsigned char *p, size_t count, unsigned width) {
  size_t i;
  for (i = 0; i < count; i++) {
    int64_t v;
    memcpy(&v, p + i * 8, 8);
    if (width == 1) {
      int8_t w = (int8_t)v;
      memcpy(p + i, &w, 1);
    } else if (width == 2) {
      int16_t w = (int16_t)v;
      memcpy(p + i * 2, &w, 2);
    } else if (width == 4) {
      int32_t w = (int32_t)v;
      memcpy(p + i * 4, &w, 4);
    }
  }
}

int lmp__encode_number_array(lua_State *L, int idx, lmp_buffer *out) {
  size_t start = out->len, header, hint;
  lua_Integer next_index = 1;
  int is_float, key;
  int64_t lo = 0, hi = 0;
  uint32_t count;
  unsigned width;
  /* Whether the table holds keys 1..n and nothing else, and values of one
   * number subtype, is only known at the end of a pass of lua_next (a
   * length operator would not see a hole or an extra key): the values are
   * written as they come, and the bytes dropped if the table turns out
   * not to be one. */
  lua_pushnil(L);
  key = lua_gettop(L);
  if (!lua_next(L, idx)) return 0; /* empty: lua_next popped the key */
  if (lua_type(L, key + 1) != LUA_TNUMBER) {
    lua_pop(L, 2);
    return 0;
  }
  is_float = !lua_isinteger(L, key + 1);
  /* The tag, a u32 count and, for integers, a width byte: patched at the
   * end. The length is only a hint for the room to make (the border of a
   * sparse table can be far larger than its keys: capped). */
  header = is_float ? 5 : 6;
  hint = lua_rawlen(L, idx);
  if (hint > ((size_t)1 << 21)) hint = (size_t)1 << 21;
  if (lmp__buffer_reserve(out, header + hint * 8) != 0) goto oom;
  out->len += header;
  for (;;) {
    unsigned char *b;
    if (!lua_isinteger(L, key) || lua_tointeger(L, key) != next_index ||
        next_index == UINT32_MAX)
      goto not_one;
    if (out->cap - out->len < 8 && lmp__buffer_reserve(out, 8) != 0) goto oom;
    b = (unsigned char *)out->data + out->len;
    if (is_float) {
      double d;
      if (lua_type(L, key + 1) != LUA_TNUMBER || lua_isinteger(L, key + 1)) goto not_one;
      d = (double)lua_tonumber(L, key + 1);
      memcpy(b, &d, 8);
    } else {
      int64_t v;
      if (!lua_isinteger(L, key + 1)) goto not_one;
      v = (int64_t)lua_tointeger(L, key + 1);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      memcpy(b, &v, 8);
    }
    out->len += 8;
    next_index++;
    lua_settop(L, key);
    if (!lua_next(L, idx)) break;
  }
  count = (uint32_t)(next_index - 1);
  if (count < NUMBER_ARRAY_MIN) {
    out->len = start;
    return 0;
  }
  out->data[start] = (char)(is_float ? T_FLOAT_ARRAY : T_INT_ARRAY);
  memcpy(out->data + start + 1, &count, 4);
  if (!is_float) {
    width = width_of(lo, hi);
    out->data[start + 5] = (char)width;
    narrow((unsigned char *)out->data + start + 6, count, width);
    out->len = start + 6 + (size_t)count * width;
  }
  return 1;
not_one:
  lua_pop(L, 2);
  out->len = start;
  return 0;
oom:
  lua_pop(L, 2);
  out->len = start;
  return -1;
}

const char *lmp__decode_number_array(lua_State *L, int tag, const unsigned char **pp,
                                     const unsigned char *end, size_t *slot_budget) {
  const unsigned char *p = *pp;
  uint32_t count, i;
  unsigned width = 8;
  int table;
  if (end - p < 4) return "truncated";
  memcpy(&count, p, 4);
  p += 4;
  if (tag == T_INT_ARRAY) {
    if (end - p < 1) return "truncated";
    width = *p++;
    if (width != 1 && width != 2 && width != 4 && width != 8) return "bad integer width";
  }
  /* Every value has its bytes: the count cannot ask for more table than
   * the input holds. */
  if ((uint64_t)count * width > (uint64_t)(end - p) || count > *slot_budget)
    return "array larger than the data";
  *slot_budget -= count;
  lua_createtable(L, (int)count, 0);
  table = lua_gettop(L);
  if (tag == T_FLOAT_ARRAY) {
    for (i = 0; i < count; i++) {
      double d;
      memcpy(&d, p + (size_t)i * 8, 8);
      lua_pushnumber(L, (lua_Number)d);
      lua_rawseti(L, table, (lua_Integer)i + 1);
    }
  } else {
    for (i = 0; i < count; i++) {
      const unsigned char *v = p + (size_t)i * width;
      lua_Integer n;
      if (width == 1) n = (int8_t)*v;
      else if (width == 2) {
        int16_t w;
        memcpy(&w, v, 2);
        n = w;
      } else if (width == 4) {
        int32_t w;
        memcpy(&w, v, 4);
        n = w;
      } else {
        int64_t w;
        memcpy(&w, v, 8);
        n = (lua_Integer)w;
      }
      lua_pushinteger(L, n);
      lua_rawseti(L, table, (lua_Integer)i + 1);
    }
  }
  *pp = p + (size_t)count * width;
  return NULL;
}
