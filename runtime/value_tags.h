/* What the encoder (encode.c) and the decoder (decode.c) share: the tags
 * of the value format (value_format.md beside this file describes the
 * bytes). Internal to the value layer. */
#ifndef LMP_VALUE_TAGS_H
#define LMP_VALUE_TAGS_H

#include "value.h"

/* Numbers and counts are stored in the host's byte order, which the format
 * defines as little-endian (value_format.md). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lmp's value format is little-endian: add byte swaps to encode.c and decode.c"
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
  T_UPVALUE_REF,
  T_FLOAT_ARRAY,
  T_INT_ARRAY
};

/* numbers.c: a number (at idx) in the smallest encoding that keeps its
 * subtype and every bit; an integer alike. Return -1 when out of memory,
 * else 0. */
int lmp__put_number(lua_State *L, int idx, lmp_buffer *out);
int lmp__put_integer(lmp_buffer *out, lua_Integer v);
/* numbers.c: a table that holds keys 1..n (n at least 4) and nothing
 * else, every value a float or every value an integer, written as one
 * typed block (the table at idx has no metatable and is not one met
 * before: the caller checked). Returns 1 when written; 0 when the table is
 * not one (out is left as it was); -1 when out of memory. */
int lmp__encode_number_array(lua_State *L, int idx, lmp_buffer *out);
/* numbers.c: list[first .. first + count - 1] (the table at idx), when
 * there are at least 4 and all are floats or all integers, written as one
 * typed block: the whole encoding of a list of numbers, a map's chunk or
 * its answer, whose length is its count (lmp__encode_list). Reads each
 * value once; returns 1 when written, 0 when the items are not such a list
 * (out is left as it was), -1 when out of memory. */
int lmp__encode_number_list(lua_State *L, int idx, lua_Integer first, lua_Integer count,
                            lmp_buffer *out);
/* Reads the block after the tag (*pp just past it) and pushes its table;
 * returns NULL, or what is malformed (nothing pushed). */
const char *lmp__decode_number_array(lua_State *L, int tag, const unsigned char **pp,
                                     const unsigned char *end, size_t *slot_budget);
/* The same into the table at dst (an absolute index), its values at keys
 * first onwards, nothing pushed; when expect is not negative, a block of
 * another count is refused (nothing written). */
const char *lmp__decode_number_array_into(lua_State *L, int tag, const unsigned char **pp,
                                          const unsigned char *end, size_t *slot_budget,
                                          int dst, lua_Integer first, int64_t expect);

/* Puts in stack slot `slot` the spare table kept under `key` in the
 * registry (taking it from there), or a new one. */
static inline void lmp__take_spare_table(lua_State *L, const void *key, int slot) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  } else {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  lua_replace(L, slot);
}

#endif
