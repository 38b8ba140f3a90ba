/* The value format's numbers: one number in the smallest encoding that
 * keeps its subtype and bits, and number arrays, a sequence table of only
 * floats or only integers written as one typed block (FLOAT_ARRAY,
 * INT_ARRAY in value_format.md) instead of a tag per value: a million
 * floats is one pass of 8-byte copies each way, a million small integers
 * a byte each. Called by encode.c, and by decode.c for the two array
 * tags. Where table_peek.h allows, a table's values are read and written
 * in Lua's array part directly. */
#include <stdint.h>
#include <string.h>

#include "table_peek.h"
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

/* The narrowest width (1, 2, 4 or 8 bytes) that holds v as a signed
 * number. */
static unsigned width_of(int64_t v) {
  if (v >= INT8_MIN && v <= INT8_MAX) return 1;
  if (v >= INT16_MIN && v <= INT16_MAX) return 2;
  if (v >= INT32_MIN && v <= INT32_MAX) return 4;
  return 8;
}

/* Whether v fits in `width` bytes as a signed number. */
static int fits(int64_t v, unsigned width) {
  switch (width) {
    case 1: return v >= INT8_MIN && v <= INT8_MAX;
    case 2: return v >= INT16_MIN && v <= INT16_MAX;
    case 4: return v >= INT32_MIN && v <= INT32_MAX;
    default: return 1;
  }
}

static void put_width(unsigned char *b, int64_t v, unsigned width) {
  if (width == 1) {
    int8_t w = (int8_t)v;
    memcpy(b, &w, 1);
  } else if (width == 2) {
    int16_t w = (int16_t)v;
    memcpy(b, &w, 2);
  } else if (width == 4) {
    int32_t w = (int32_t)v;
    memcpy(b, &w, 4);
  } else {
    memcpy(b, &v, 8);
  }
}

static int64_t get_width(const unsigned char *b, unsigned width) {
  if (width == 1) return (int8_t)*b;
  if (width == 2) {
    int16_t w;
    memcpy(&w, b, 2);
    return w;
  }
  if (width == 4) {
    int32_t w;
    memcpy(&w, b, 4);
    return w;
  }
  {
    int64_t w;
    memcpy(&w, b, 8);
    return w;
  }
}

/* Rewrites `count` values at p from `from` bytes each to `to` (wider), in
 * place: from the last down, each write lands at or after what it reads
 * and after every value still to read. */
static void widen(unsigned char *p, size_t count, unsigned from, unsigned to) {
  size_t i = count;
  while (i-- > 0) put_width(p + i * to, get_width(p + i * from, from), to);
}

/* Writes cells from..size-1 of a read-in-place array part as integers of
 * `width` bytes at dst (cell i at dst + i * width), while they are
 * integers that fit; returns the first cell it did not write. Called with
 * a constant width, so each width gets a loop of its own. */
static inline size_t put_integer_cells(const lmp_peek *p, size_t from, unsigned char *dst,
                                       unsigned width) {
  size_t i;
  for (i = from; i < p->size && lmp__peek_is_integer(p, i); i++) {
    int64_t v = (int64_t)lmp__peek_integer(p, i);
    if (!fits(v, width)) break;
    put_width(dst + i * width, v, width);
  }
  return i;
}

/* The typed block of a table whose array part is read in place
 * (table_peek.h): one pass over its cells, no call into Lua per value.
 * Returns what lmp__encode_number_array does, but 0 also when the table
 * is one this cannot vouch for: the caller then takes the lua_next pass,
 * which knows. The values are written as they come, into room for the
 * whole array part, the integers in the width of those met so far. */
static int encode_in_place(lua_State *L, int idx, lmp_buffer *out) {
  lmp_peek p;
  size_t start = out->len, header, count, i;
  unsigned width;
  unsigned char *b;
  uint32_t count32;
  if (!lmp__peek_array(L, idx, &p) || p.size < NUMBER_ARRAY_MIN || p.size >= UINT32_MAX - 1)
    return 0;
  if (lmp__peek_is_float(&p, 0)) {
    header = 5;
    width = 8;
    if (lmp__buffer_reserve(out, header + p.size * 8) != 0) return -1;
    b = (unsigned char *)out->data + start + header;
    for (i = 0; i < p.size && lmp__peek_is_float(&p, i); i++) {
      double d = (double)lmp__peek_float(&p, i);
      memcpy(b + i * 8, &d, 8);
    }
    count = i;
  } else if (lmp__peek_is_integer(&p, 0)) {
    header = 6;
    width = 1;
    if (lmp__buffer_reserve(out, header + p.size) != 0) return -1;
    i = 0;
    for (;;) {
      unsigned wider;
      b = (unsigned char *)out->data + start + header;
      switch (width) {
        case 1: i = put_integer_cells(&p, i, b, 1); break;
        case 2: i = put_integer_cells(&p, i, b, 2); break;
        case 4: i = put_integer_cells(&p, i, b, 4); break;
        default: i = put_integer_cells(&p, i, b, 8); break;
      }
      if (i == p.size || !lmp__peek_is_integer(&p, i)) break;
      /* Cell i does not fit (at most three times an array). */
      wider = width_of((int64_t)lmp__peek_integer(&p, i));
      out->len = start + header + i * width;
      if (lmp__buffer_reserve(out, p.size * wider) != 0) {
        out->len = start;
        return -1;
      }
      out->len = start;
      widen((unsigned char *)out->data + start + header, i, width, wider);
      width = wider;
    }
    count = i;
  } else {
    return 0;
  }
  /* Keys 1..count and no other: the rest of the array part is nil. */
  for (i = count; i < p.size; i++)
    if (!lmp__peek_is_nil(&p, i)) return 0;
  if (count < NUMBER_ARRAY_MIN || !lmp__peek_confirm(L, idx, &p, count)) return 0;
  count32 = (uint32_t)count;
  out->data[start] = (char)(header == 5 ? T_FLOAT_ARRAY : T_INT_ARRAY);
  memcpy(out->data + start + 1, &count32, 4);
  if (header == 6) out->data[start + 5] = (char)width;
  out->len = start + header + count * width;
  return 1;
}

int lmp__encode_number_array(lua_State *L, int idx, lmp_buffer *out) {
  size_t start = out->len, header, count = 0, room = 0;
  int key, is_float;
  unsigned width = 1;
  uint32_t count32;
  unsigned char *b;
  /* Whether the table holds keys 1..n and nothing else, and values of one
   * number subtype, is only known at the end of a pass of lua_next (a
   * length operator would not see a hole or an extra key): the values are
   * written as they come, and the bytes dropped if the table turns out
   * not to be one. The calls into Lua are nearly all the cost, so each
   * value takes as few as a sound check allows: lua_next, two for its key
   * (its subtype: a string key "5" reads as 5), two for its value, one to
   * pop it. Reading the values by index instead (lua_rawgeti) is cheaper
   * per value, but only a pass of lua_next can tell that no other key is
   * there, and the two passes cost more than this one. Where Lua's array
   * part can be read in place, none of these calls is made. */
  int in_place = encode_in_place(L, idx, out);
  if (in_place != 0) return in_place;
  lua_pushnil(L);
  key = lua_gettop(L);
  if (!lua_next(L, idx)) return 0; /* empty: lua_next popped the key */
  if (lua_type(L, key + 1) != LUA_TNUMBER) {
    lua_settop(L, key - 1);
    return 0;
  }
  is_float = !lua_isinteger(L, key + 1);
  header = is_float ? 5 : 6;
  if (lmp__buffer_reserve(out, header) != 0) goto oom;
  out->len += header;
  b = (unsigned char *)out->data + out->len;
  for (;;) {
    if (!lua_isinteger(L, key) || lua_tointegerx(L, key, NULL) != (lua_Integer)count + 1 ||
        count == UINT32_MAX - 1)
      goto not_one;
    if (room == 0) {
      /* Room for a batch at a time: the length of the table is no guide
       * (the border of a sparse table can be far larger than its keys). */
      out->len = start + header + count * (is_float ? 8 : width);
      if (lmp__buffer_reserve(out, 1024 * (is_float ? 8 : width)) != 0) goto oom;
      b = (unsigned char *)out->data + out->len;
      room = 1024;
    }
    if (is_float) {
      double d;
      if (lua_type(L, key + 1) != LUA_TNUMBER || lua_isinteger(L, key + 1)) goto not_one;
      d = (double)lua_tonumberx(L, key + 1, NULL);
      memcpy(b, &d, 8);
      b += 8;
    } else {
      int64_t v;
      if (!lua_isinteger(L, key + 1)) goto not_one;
      v = (int64_t)lua_tointegerx(L, key + 1, NULL);
      if (!fits(v, width)) {
        /* Rare (at most three times an array): what is written so far
         * moves to wider slots. */
        unsigned wider = width_of(v);
        out->len = start + header + count * width;
        if (lmp__buffer_reserve(out, count * (wider - width) + room * wider) != 0) goto oom;
        widen((unsigned char *)out->data + start + header, count, width, wider);
        width = wider;
        b = (unsigned char *)out->data + start + header + count * width;
      }
      put_width(b, v, width);
      b += width;
    }
    count++;
    room--;
    lua_settop(L, key);
    if (!lua_next(L, idx)) break;
  }
  lua_settop(L, key - 1);
  out->len = start + header + count * (is_float ? 8 : width);
  if (count < NUMBER_ARRAY_MIN) {
    out->len = start;
    return 0;
  }
  count32 = (uint32_t)count;
  out->data[start] = (char)(is_float ? T_FLOAT_ARRAY : T_INT_ARRAY);
  memcpy(out->data + start + 1, &count32, 4);
  if (!is_float) out->data[start + 5] = (char)width;
  return 1;
not_one:
  lua_settop(L, key - 1);
  out->len = start;
  return 0;
oom:
  lua_settop(L, key - 1);
  out->len = start;
  return -1;
}

/* Writes the block's values into the cells of a table made for them
 * (table_peek.h), a loop for each width. */
static void fill_in_place(lmp_peek *cells, int tag, const unsigned char *p, uint32_t count,
                          unsigned width) {
  uint32_t i;
  if (tag == T_FLOAT_ARRAY) {
    for (i = 0; i < count; i++) {
      double d;
      memcpy(&d, p + (size_t)i * 8, 8);
      lmp__peek_set_float(cells, i, (lua_Number)d);
    }
    return;
  }
  switch (width) {
    case 1:
      for (i = 0; i < count; i++) lmp__peek_set_integer(cells, i, (int8_t)p[i]);
      break;
    case 2:
      for (i = 0; i < count; i++)
        lmp__peek_set_integer(cells, i, (lua_Integer)get_width(p + (size_t)i * 2, 2));
      break;
    case 4:
      for (i = 0; i < count; i++)
        lmp__peek_set_integer(cells, i, (lua_Integer)get_width(p + (size_t)i * 4, 4));
      break;
    default:
      for (i = 0; i < count; i++)
        lmp__peek_set_integer(cells, i, (lua_Integer)get_width(p + (size_t)i * 8, 8));
      break;
  }
}

/* Reads a number array's header after its tag (*pp just past the tag):
 * its count and the width of its values; *pp is left at the first value.
 * Returns NULL, or what is malformed. */
static const char *read_array_header(int tag, const unsigned char **pp,
                                     const unsigned char *end, uint32_t *count,
                                     unsigned *width) {
  const unsigned char *p = *pp;
  if (end - p < 4) return "truncated";
  memcpy(count, p, 4);
  p += 4;
  *width = 8;
  if (tag == T_INT_ARRAY) {
    if (end - p < 1) return "truncated";
    *width = *p++;
    if (*width != 1 && *width != 2 && *width != 4 && *width != 8) return "bad integer width";
  }
  *pp = p;
  return NULL;
}

const char *lmp__decode_number_array_into(lua_State *L, int tag, const unsigned char **pp,
                                          const unsigned char *end, size_t *slot_budget,
                                          int dst, lua_Integer first, int64_t expect) {
  const unsigned char *p = *pp;
  const char *bad = NULL;
  uint32_t count, i;
  unsigned width;
  int table = dst;
  lmp_peek cells;
  if ((bad = read_array_header(tag, &p, end, &count, &width)) != NULL) return bad;
  /* Every value has its bytes: the count cannot ask for more table than
   * the input holds. */
  if ((uint64_t)count * width > (uint64_t)(end - p) || count > *slot_budget)
    return "array larger than the data";
  if (expect >= 0 && (int64_t)count != expect) return "not the expected count";
  *slot_budget -= count;
  *pp = p + (size_t)count * width;
  /* A table of its own is written in place where its array part can be
   * (no call into Lua a value); else, or should Lua read back something
   * else, through the C API. A given table (dst, a map's results, made
   * with room for all) is filled from `first` in place when its array
   * part holds the keys, else through the API. */
  if (dst == 0) {
    if (lmp__peek_new_array(L, count, &cells)) {
      fill_in_place(&cells, tag, p, count, width);
      if (lmp__peek_confirm(L, lua_gettop(L), &cells, count)) return NULL;
      lua_pop(L, 1);
    }
    lua_createtable(L, (int)count, 0);
    table = lua_gettop(L);
  } else if (count > 0 && first >= 1 && lmp__peek_array_part(L, dst, &cells) &&
             (size_t)first - 1 + count <= cells.size) {
    lmp_peek range;
    range.cells = cells.cells + (first - 1);
    range.size = count;
    fill_in_place(&range, tag, p, count, width);
    if (lmp__peek_confirm_range(L, dst, &cells, (size_t)first, count)) return NULL;
  }
  if (tag == T_FLOAT_ARRAY) {
    for (i = 0; i < count; i++) {
      double d;
      memcpy(&d, p + (size_t)i * 8, 8);
      lua_pushnumber(L, (lua_Number)d);
      lua_rawseti(L, table, first + (lua_Integer)i);
    }
  } else {
    for (i = 0; i < count; i++) {
      lua_pushinteger(L, (lua_Integer)get_width(p + (size_t)i * width, width));
      lua_rawseti(L, table, first + (lua_Integer)i);
    }
  }
  return NULL;
}

const char *lmp__decode_number_array(lua_State *L, int tag, const unsigned char **pp,
                                     const unsigned char *end, size_t *slot_budget) {
  return lmp__decode_number_array_into(L, tag, pp, end, slot_budget, 0, 1, -1);
}

int lmp__is_number_list(const char *p, size_t n) {
  return n >= 6 && (unsigned char)p[0] == LMP_FORMAT_VERSION &&
         (p[1] == T_INT_ARRAY || p[1] == T_FLOAT_ARRAY);
}

int lmp__open_number_list(const char *p, size_t n, lmp_number_list *list) {
  const unsigned char *q = (const unsigned char *)p + 2, *end = (const unsigned char *)p + n;
  uint32_t count;
  unsigned width;
  if (!lmp__is_number_list(p, n) || read_array_header(p[1], &q, end, &count, &width) != NULL ||
      (uint64_t)count * width != (uint64_t)(end - q))
    return 0;
  list->data = q;
  list->count = count;
  list->width = width;
  list->is_float = p[1] == T_FLOAT_ARRAY;
  return 1;
}

void lmp__push_list_number(lua_State *L, const lmp_number_list *list, uint32_t i) {
  if (list->is_float) {
    double d;
    memcpy(&d, list->data + (size_t)i * 8, 8);
    lua_pushnumber(L, (lua_Number)d);
  } else {
    lua_pushinteger(L, (lua_Integer)get_width(list->data + (size_t)i * list->width, list->width));
  }
}

/* How many values lmp__encode_number_list leaves on the stack before it
 * pops them all at once: one lua_settop per batch instead of one a value. */
#define LIST_BATCH 64

/* Reads list[first .. first + n - 1] (the table at idx) into 8-byte
 * slots at b, in place (table_peek.h): every cell a number of the
 * subtype is_float says, the lowest and highest integer noted. Returns 0
 * when the table is not one this can vouch for or a cell is not such a
 * number: the caller then reads through the API, which knows. */
static int list_slots_in_place(lua_State *L, int idx, size_t first, size_t n, int is_float,
                               unsigned char *b, int64_t *low, int64_t *high) {
  lmp_peek p, items;
  size_t i;
  /* Keys inside the array part are there whatever the hash part holds
   * (a list made by table.pack has its n there). */
  if (!lmp__peek_array_part(L, idx, &p) || first == 0 || first - 1 + n > p.size) return 0;
  items.cells = p.cells + (first - 1);
  items.size = n;
  if (is_float) {
    for (i = 0; i < n; i++) {
      double d;
      if (!lmp__peek_is_float(&items, i)) return 0;
      d = (double)lmp__peek_float(&items, i);
      memcpy(b + i * 8, &d, 8);
    }
  } else {
    int64_t lo = 0, hi = 0;
    for (i = 0; i < n; i++) {
      int64_t v;
      if (!lmp__peek_is_integer(&items, i)) return 0;
      v = (int64_t)lmp__peek_integer(&items, i);
      memcpy(b + i * 8, &v, 8);
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    *low = lo;
    *high = hi;
  }
  return lmp__peek_confirm_range(L, idx, &p, first, n);
}

/* The same through the C API; 0 when a value is not such a number. */
static int list_slots_through_api(lua_State *L, int idx, lua_Integer first, size_t n,
                                  int is_float, unsigned char *b, int64_t *low, int64_t *high) {
  int top = lua_gettop(L);
  size_t i;
  int64_t lo = 0, hi = 0;
  luaL_checkstack(L, LIST_BATCH, "lmp: encoding a list");
  for (i = 0; i < n; i++) {
    if (lua_rawgeti(L, idx, first + (lua_Integer)i) != LUA_TNUMBER ||
        lua_isinteger(L, -1) == is_float) {
      lua_settop(L, top);
      return 0;
    }
    if (is_float) {
      double d = (double)lua_tonumberx(L, -1, NULL);
      memcpy(b + i * 8, &d, 8);
    } else {
      int64_t v = (int64_t)lua_tointegerx(L, -1, NULL);
      memcpy(b + i * 8, &v, 8);
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    if (i % LIST_BATCH == LIST_BATCH - 1) lua_settop(L, top);
  }
  lua_settop(L, top);
  *low = lo;
  *high = hi;
  return 1;
}

int lmp__encode_number_list(lua_State *L, int idx, lua_Integer first, lua_Integer count,
                            lmp_buffer *out) {
  size_t start = out->len, header, i, n = (size_t)count;
  int is_float, top = lua_gettop(L), kind;
  int64_t low = 0, high = 0;
  unsigned width;
  uint32_t count32;
  unsigned char *b;
  if (count < NUMBER_ARRAY_MIN || count > UINT32_MAX - 1) return 0;
  kind = lua_rawgeti(L, idx, first);
  is_float = kind == LUA_TNUMBER && !lua_isinteger(L, -1);
  lua_settop(L, top);
  if (kind != LUA_TNUMBER) return 0;
  /* The values are read once, into 8-byte slots, and the integers
   * narrowed after: the width of the block is known only once every value
   * was read. */
  header = is_float ? 5 : 6;
  if (lmp__buffer_reserve(out, header + n * 8) != 0) return -1;
  b = (unsigned char *)out->data + start + header;
  if (!(first >= 1 && list_slots_in_place(L, idx, (size_t)first, n, is_float, b, &low, &high)) &&
      !list_slots_through_api(L, idx, first, n, is_float, b, &low, &high))
    return 0;
  width = is_float ? 8 : width_of(low) > width_of(high) ? width_of(low) : width_of(high);
  /* Narrowed in place: each write lands at or before what it reads. */
  if (width == 1) {
    for (i = 0; i < n; i++) b[i] = b[i * 8];
  } else if (width == 2) {
    for (i = 0; i < n; i++) memmove(b + i * 2, b + i * 8, 2);
  } else if (width == 4) {
    for (i = 0; i < n; i++) memmove(b + i * 4, b + i * 8, 4);
  }
  count32 = (uint32_t)count;
  out->data[start] = (char)(is_float ? T_FLOAT_ARRAY : T_INT_ARRAY);
  memcpy(out->data + start + 1, &count32, 4);
  if (!is_float) out->data[start + 5] = (char)width;
  out->len = start + header + n * width;
  return 1;
}
