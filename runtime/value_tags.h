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
  T_UPVALUE_REF
};

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
