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
  char code; /* a Value's type code, for its fast .value; else 0 */
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

static size_t code_size(char code) {
  switch (code) {
    case 'b': case 'B': return 1;
    case 'h': case 'H': return 2;
    case 'i': case 'I': case 'f': return 4;
    case 'l': case 'L': case 'q': case 'Q': case 'd': return 8;
    default: return 0;
  }
}

/* core.map(fd, size [, code]) -> mapping of the file's first size bytes;
 * code: the type code of the one item a Value's mapping holds. */
static int core_map(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_Integer size = luaL_checkinteger(L, 2);
  const char *code = luaL_optstring(L, 3, "");
  mapping *m;
  luaL_argcheck(L, code[0] == '\0' || (code_size(code[0]) > 0 && code_size(code[0]) <= (lua_Unsigned)size),
                3, "type code of an item that fits expected");
  m = lua_newuserdatauv(L, sizeof *m, 0);
  m->base = NULL;
  m->size = 0;
  m->code = code[0];
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
  size_t size = code_size(s[0]);
  *code = s[0];
  if (size == 0) luaL_argerror(L, arg, "type code expected (b B h H i I l L q Q f d)");
  return size;
}

/* Checks that item `index` (1-based) of the code's size fits; returns its
 * address. */
static char *item_at(lua_State *L, mapping *m, size_t size, int arg) {
  lua_Integer index = luaL_checkinteger(L, arg);
  if (index < 1 || (lua_Unsigned)index > m->size / size)
    luaL_error(L, "lmp: index %I out of range (1 to %I)", index, (lua_Integer)(m->size / size));
  return m->base + (size_t)(index - 1) * size;
}

/* Pushes the item of type code at p. */
static void push_item(lua_State *L, char code, const char *p) {
  item v;
  memcpy(&v, p, code_size(code));
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
}

/* Stores the number at idx as an item of type code at p; 0 when it is no
 * number of the code's kind (an integer code takes what lua_tointegerx
 * takes, as luaL_checkinteger), and nothing is stored. */
static int store_item(lua_State *L, char code, char *p, int idx) {
  item v;
  int ok;
  if (code == 'f' || code == 'd') {
    lua_Number n = lua_tonumberx(L, idx, &ok);
    if (!ok) return 0;
    if (code == 'f') v.f = (float)n; else v.d = (double)n;
  } else {
    lua_Integer n = lua_tointegerx(L, idx, &ok);
    if (!ok) return 0;
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
  memcpy(p, &v, code_size(code));
  return 1;
}

/* mapping:get(code, index) -> number */
static int mapping_get(lua_State *L) {
  mapping *m = check_mapping(L);
  char code;
  size_t size = item_size(L, 2, &code);
  push_item(L, code, item_at(L, m, size, 3));
  return 1;
}

/* mapping:set(code, index, number) */
static int mapping_set(lua_State *L) {
  mapping *m = check_mapping(L);
  char code;
  size_t size = item_size(L, 2, &code);
  char *p = item_at(L, m, size, 3);
  if (!store_item(L, code, p, 4)) {
    if (code == 'f' || code == 'd') luaL_checknumber(L, 4);
    luaL_checkinteger(L, 4);
  }
  return 0;
}

/* ---- a Value's .value, fast -------------------------------------------------------
 * v.value and v.value = x are the inside of every critical section under
 * a Value's lock: one call into C each. The Value's __index and
 * __newindex find the object's mapping in shared.lua's table of mappings
 * (upvalue 1) and read or write its item; a key other than "value" is
 * looked up in the methods (upvalue 3), and anything else (no mapping
 * yet, a wrong key or value, an error to raise) goes to the Lua function
 * (upvalue 2). Upvalue 4: the string "value"; 5: the mappings'
 * metatable, compared, since Lua code could put anything in the table. */
static mapping *value_mapping(lua_State *L) {
  mapping *m;
  lua_pushvalue(L, 1);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TUSERDATA || !lua_getmetatable(L, -1) ||
      !lua_rawequal(L, -1, lua_upvalueindex(5)))
    return NULL;
  m = lua_touserdata(L, -2);
  return m->base && m->code ? m : NULL;
}

static int slow_accessor(lua_State *L, int nargs) {
  lua_settop(L, nargs);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  lua_call(L, nargs, 1);
  return 1;
}

static int value_index(lua_State *L) {
  mapping *m;
  if (!lua_rawequal(L, 2, lua_upvalueindex(4))) {
    lua_settop(L, 2);
    lua_rawget(L, lua_upvalueindex(3));
    return 1;
  }
  if ((m = value_mapping(L)) == NULL) return slow_accessor(L, 2);
  push_item(L, m->code, m->base);
  return 1;
}

static int value_newindex(lua_State *L) {
  mapping *m;
  if (!lua_rawequal(L, 2, lua_upvalueindex(4)) || (m = value_mapping(L)) == NULL ||
      !store_item(L, m->code, m->base, 3))
    return slow_accessor(L, 3);
  return 0;
}

/* core.value_accessors(mappings, slow_index, slow_newindex, methods) ->
 * __index, __newindex */
static int core_value_accessors(lua_State *L) {
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TTABLE);
  for (i = 0; i < 2; i++) {
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2 + i);
    lua_pushvalue(L, 4);
    lua_pushliteral(L, "value");
    luaL_getmetatable(L, MAPPING_META);
    lua_pushcclosure(L, i == 0 ? value_index : value_newindex, 5);
  }
  return 2;
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
    {"map", core_map},             {"value_accessors", core_value_accessors},
    {NULL, NULL}};

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
