/* The Lua half of lmp, compiled into the library by tools/embed_lua.lua. */
#ifndef LMP_EMBED_H
#define LMP_EMBED_H
#include <stddef.h>

typedef struct lmp__lua_source {
  const char *module;    /* "lmp", "lmp.pool", ... */
  const char *chunkname; /* "@lua/lmp/pool.lua" */
  const char *code;
  size_t size;
} lmp__lua_source;

extern const lmp__lua_source lmp__lua_sources[];
#endif
