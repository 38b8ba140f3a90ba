/* Shared memory for lmp.Value, lmp.Array and lmp.shared_memory: files
 * (unlinked, or POSIX shm objects by name) mapped MAP_SHARED, with typed
 * access in the array module's type codes. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport.h"

#define MAPPING_META "lmp.Mapping"

/* One item of any type code, copied in and out with memcpy (no alignment
 * is assumed of the mapping). */
typedef union item {
  int8_t b; uint8_t B; int16_t h; uint16_t H; int32_t i; uint32_t I;
  int64_t l; uint64_t L; float f; double d;
} item;

typedef struct mapping {
  char *base; /* NULL once unmapped */
  size_t size;
} mapping;

/* core.memfile(size) -> fd of a fresh file of size bytes that has no name
 * (memfd_create; an unlinked temporary file where the kernel lacks it):
 * nothing to remove, whatever becomes of the processes that share it. */
static int core_memfile(lua_State *L) {
  lua_Integer size = luaL_checkinteger(L, 1);
  int fd;
  luaL_argcheck(L, size >= 0, 1, "size must not be negative");
  fd = memfd_create("lmp-shared", 0);
  if (fd < 0) {
    char path[] = "/tmp/lmp-shared-XXXXXX";
    fd = mkstemp(path);
    if (fd < 0) return luaL_error(L, "lmp: cannot make shared memory: %s", strerror(errno));
    unlink(path);
  }
  if (ftruncate(fd, (off_t)size) != 0) {
    int e = errno;
    close(fd);
    return luaL_error(L, "lmp: cannot size shared memory: %s", strerror(e));
  }
  lua_pushinteger(L, fd);
  return 1;
}

/* core.shm_open(name, create, size) -> fd, size; or nil, message, and
 * whether the name exists already (creating). */
static int core_shm_open(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  int create = lua_toboolean(L, 2);
  lua_Integer size = luaL_optinteger(L, 3, 0);
  struct stat st;
  int fd = shm_open(name, create ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0600);
  if (fd < 0) {
    int e = errno;
    lua_pushnil(L);
    lua_pushstring(L, strerror(e));
    lua_pushboolean(L, e == EEXIST);
    return 3;
  }
  if (create && ftruncate(fd, (off_t)size) != 0) {
    int e = errno;
    close(fd);
    shm_unlink(name);
    lua_pushnil(L);
    lua_pushstring(L, strerror(e));
    return 2;
  }
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    lua_pushnil(L);
    lua_pushstring(L, strerror(e));
    return 2;
  }
  lua_pushinteger(L, fd);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 2;
}

static int core_shm_unlink(lua_State *L) {
  lua_pushboolean(L, shm_unlink(luaL_checkstring(L, 1)) == 0);
  return 1;
}

static int core_fd_close(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* core.map(fd, size) -> mapping of the file's first size bytes. */
static int core_map(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_Integer size = luaL_checkinteger(L, 2);
  mapping *m = lua_newuserdatauv(L, sizeof *m, 0);
  m->base = NULL;
  m->size = 0;
  luaL_setmetatable(L, MAPPING_META);
  luaL_argcheck(L, size >= 0, 2, "size must not be negative");
  if (size > 0) {
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return luaL_error(L, "lmp: cannot map shared memory: %s", strerror(errno));
    m->base = p;
  }
  m->size = (size_t)size;
  return 1;
}

static mapping *check_mapping(lua_State *L) {
  mapping *m = luaL_checkudata(L, 1, MAPPING_META);
  if (m->base == NULL && m->size > 0) luaL_error(L, "lmp: the shared memory is closed");
  return m;
}

static size_t item_size(lua_State *L, int arg, char *code) {
  const char *s = luaL_checkstring(L, arg);
  *code = s[0];
  switch (s[0]) {
    case 'b': case 'B': return 1;
    case 'h': case 'H': return 2;
    case 'i': case 'I': case 'f': return 4;
    case 'l': case 'L': case 'q': case 'Q': case 'd': return 8;
    default:
      luaL_argerror(L, arg, "type code expected (b B h H i I l L q Q f d)");
      return 0;
  }
}

/* Checks that item `index` (1-based) of the code's size fits; returns its
 * address. */
static char *item_at(lua_State *L, mapping *m, size_t size, int arg) {
  lua_Integer index = luaL_checkinteger(L, arg);
  if (index < 1 || (lua_Unsigned)index > m->size / size)
    luaL_error(L, "lmp: index %I out of range (1 to %I)", index, (lua_Integer)(m->size / size));
  return m->base + (size_t)(index - 1) * size;
}

/* mapping:get(code, index) -> number */
static int mapping_get(lua_State *L) {
  mapping *m = check_mapping(L);
  char code;
  size_t size = item_size(L, 2, &code);
  char *p = item_at(L, m, size, 3);
  item v;
  memcpy(&v, p, size);
  switch (code) {
    case 'b': lua_pushinteger(L, v.b); break;
    case 'B': lua_pushinteger(L, v.B); break;
    case 'h': lua_pushinteger(L, v.h); break;
    case 'H': lua_pushinteger(L, v.H); break;
    case 'i': lua_pushinteger(L, v.i); break;
    case 'I': lua_pushinteger(L, v.I); break;
    case 'l': case 'q': lua_pushinteger(L, (lua_Integer)v.l); break;
    case 'L': case 'Q': lua_pushinteger(L, (lua_Integer)v.L); break;
    case 'f': lua_pushnumber(L, v.f); break;
    default: lua_pushnumber(L, v.d); break;
  }
  return 1;
}

/* mapping:set(code, index, number) */
static int mapping_set(lua_State *L) {
  mapping *m = check_mapping(L);
  char code;
  size_t size = item_size(L, 2, &code);
  char *p = item_at(L, m, size, 3);
  item v;
  if (code == 'f' || code == 'd') {
    lua_Number n = luaL_checknumber(L, 4);
    if (code == 'f') v.f = (float)n; else v.d = (double)n;
  } else {
    lua_Integer n = luaL_checkinteger(L, 4);
    switch (code) {
      case 'b': v.b = (int8_t)n; break;
      case 'B': v.B = (uint8_t)n; break;
      case 'h': v.h = (int16_t)n; break;
      case 'H': v.H = (uint16_t)n; break;
      case 'i': v.i = (int32_t)n; break;
      case 'I': v.I = (uint32_t)n; break;
      case 'l': case 'q': v.l = (int64_t)n; break;
      default: v.L = (uint64_t)n; break;
    }
  }
  memcpy(p, &v, size);
  return 0;
}

/* mapping:read([offset [, length]]) -> string of those bytes (0-based offset). */
static int mapping_read(lua_State *L) {
  mapping *m = check_mapping(L);
  lua_Integer offset = luaL_optinteger(L, 2, 0);
  lua_Integer length = luaL_optinteger(L, 3, (lua_Integer)m->size - offset);
  if (offset < 0 || length < 0 || (lua_Unsigned)offset + (lua_Unsigned)length > m->size)
    return luaL_error(L, "lmp: read past the end of the shared memory");
  lua_pushlstring(L, m->base + offset, (size_t)length);
  return 1;
}

/* mapping:write(offset, bytes) */
static int mapping_write(lua_State *L) {
  mapping *m = check_mapping(L);
  lua_Integer offset = luaL_checkinteger(L, 2);
  size_t length;
  const char *bytes = luaL_checklstring(L, 3, &length);
  if (offset < 0 || (lua_Unsigned)offset + length > m->size)
    return luaL_error(L, "lmp: write past the end of the shared memory");
  memcpy(m->base + offset, bytes, length);
  return 0;
}

static int mapping_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)((mapping *)luaL_checkudata(L, 1, MAPPING_META))->size);
  return 1;
}

static int mapping_close(lua_State *L) {
  mapping *m = luaL_checkudata(L, 1, MAPPING_META);
  if (m->base) munmap(m->base, m->size);
  m->base = NULL;
  return 0;
}

static const luaL_Reg mapping_methods[] = {
    {"get", mapping_get},   {"set", mapping_set},     {"read", mapping_read},
    {"write", mapping_write}, {"size", mapping_size}, {"close", mapping_close},
    {NULL, NULL}};

static const luaL_Reg shared_functions[] = {
    {"memfile", core_memfile},     {"shm_open", core_shm_open},
    {"shm_unlink", core_shm_unlink}, {"fd_close", core_fd_close},
    {"map", core_map},             {NULL, NULL}};

void lmp__open_shared(lua_State *L) {
  if (luaL_newmetatable(L, MAPPING_META)) {
    luaL_newlib(L, mapping_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, mapping_close);
    lua_setfield(L, -2, "__gc");
    lua_pushstring(L, "a mapping belongs to its process: send the object that owns it");
    lua_setfield(L, -2, "__lmp_nosend");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, shared_functions, 0);
}
