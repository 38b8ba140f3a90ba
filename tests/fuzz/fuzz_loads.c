/* libFuzzer target for the value decoder (runtime/decode.c): whatever the
 * bytes, lmp__decode must return a value or raise a Lua error, never crash
 * and never allocate more than the bytes can justify. A value it returns
 * must encode again, and that encoding must decode.
 *
 * Decoded data can carry Lua functions, and a metatable can hold them as
 * __gc. Lua runs binary chunks without checking them, so a forged function
 * would crash the moment a finalizer called it: that is outside what the
 * decoder can promise (value_format.md, "Trust"). The target therefore
 * never lets the collector run: the Lua state lives in an arena that is
 * dropped whole, without lua_close, every few hundred inputs.
 *
 * Build and run: tests/fuzz/run.sh [seconds]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "value.h"

/* ---- an arena allocator: every block is on one list ------------------- */

typedef struct block {
  struct block *prev, *next;
  size_t size, unused; /* four words keep the payload 16-byte aligned */
} block;

static block arena = {&arena, &arena, 0, 0};
static size_t arena_bytes;

static void link_block(block *b) {
  b->next = arena.next;
  b->prev = &arena;
  arena.next->prev = b;
  arena.next = b;
  arena_bytes += b->size;
}

static void unlink_block(block *b) {
  b->prev->next = b->next;
  b->next->prev = b->prev;
  arena_bytes -= b->size;
}

static void *arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  block *b = ptr ? (block *)ptr - 1 : NULL, *grown;
  (void)ud;
  (void)osize;
  if (b) unlink_block(b);
  if (nsize == 0) {
    free(b);
    return NULL;
  }
  grown = realloc(b, sizeof *b + nsize);
  if (grown == NULL) {
    if (b) link_block(b); /* Lua keeps using the old block */
    return NULL;
  }
  grown->size = nsize;
  link_block(grown);
  return grown + 1;
}

static void arena_drop(void) {
  block *b = arena.next;
  while (b != &arena) {
    block *next = b->next;
    free(b);
    b = next;
  }
  arena.next = arena.prev = &arena;
  arena_bytes = 0;
}

/* ---- the Lua state ------------------------------------------------------ */

static lua_State *L;
static int inputs_in_state;
static lmp_buffer encoded; /* reused; owned here, so an unwind cannot leak it */
static int decoded_once;   /* the input decoded; now its re-encoding is decoded */

/* The constructor for T_CUSTOM values: gives back its data. */
static int make_point(lua_State *L) {
  lua_settop(L, 1);
  return 1;
}

static void new_state(void) {
  if (L) arena_drop(); /* drops L's memory without running finalizers */
  L = lua_newstate(arena_alloc, NULL);
  if (L == NULL) abort();
  lua_gc(L, LUA_GCSTOP);
  luaL_openlibs(L);
  /* Names in the data may require modules: let them find none on disk. */
  lua_getglobal(L, "package");
  lua_pushstring(L, "");
  lua_setfield(L, -2, "path");
  lua_pushstring(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  /* The corpus's custom values use this name (make_corpus.lua). */
  lua_pushcfunction(L, make_point);
  lmp__names_register(L, "lmp.fuzz.point", -1);
  lua_pop(L, 1);
  inputs_in_state = 0;
}

static int decode_encode_decode(lua_State *L) {
  const char *data = lua_touserdata(L, 1);
  size_t size = (size_t)lua_tointeger(L, 2);
  lua_settop(L, 0);
  lmp__decode(L, data, size);
  /* It decoded: it must encode, and the encoding must decode. */
  encoded.len = 0;
  if (lmp__encode(L, 1, &encoded, "") != 0) {
    fprintf(stderr, "decoded value does not encode: %s\n",
            luaL_tolstring(L, -1, NULL));
    abort();
  }
  decoded_once = 1;
  lmp__decode(L, encoded.data, encoded.len);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int status;
  if (L == NULL || inputs_in_state >= 500 || arena_bytes > ((size_t)256 << 20))
    new_state();
  inputs_in_state++;
  decoded_once = 0;
  lua_pushcfunction(L, decode_encode_decode);
  lua_pushlightuserdata(L, (void *)data);
  lua_pushinteger(L, (lua_Integer)size);
  status = lua_pcall(L, 2, 0, 0);
  /* A second decode that fails, after a successful first one, means the
   * encoder wrote what the decoder rejects. */
  if (status != LUA_OK && decoded_once) {
    fprintf(stderr, "re-encoded value does not decode: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, 0);
  return 0;
}
