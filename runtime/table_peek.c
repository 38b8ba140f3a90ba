/* Reading and writing a Lua 5.4 table's array part in place (see
 * table_peek.h): the mirror of Lua's table header, the check that it
 * matches the running Lua, and core.table_peek, which says whether it is
 * in use. */
#include "table_peek.h"

#include <limits.h>

#include <lauxlib.h>

/* The first fields of Lua 5.4's table object, in its order and with its
 * types, as far as the array part and the marker of a missing hash part:
 * Lua's headers that define it are not installed, and its source is not
 * part of lmp, so this is a mirror of our own. The check below compares
 * everything read through it with what the C API says. */
typedef struct table_header {
  void *next;                  /* the collector's list */
  unsigned char type_tag;      /* TABLE_TAG for a table */
  unsigned char marked;        /* the collector's mark */
  unsigned char flags;         /* LIMIT_IS_NOT_SIZE, and metamethod cache bits */
  unsigned char log_node_size; /* log2 of the hash part's size */
  unsigned int limit;          /* the array part's size, or a hint below it */
  lmp_peek_cell *array;        /* the array part */
  void *node;                  /* the hash part, or a shared empty node */
  void *last_free;             /* NULL exactly when the hash part is that empty node */
} table_header;

#define TABLE_TAG 0x05
/* Set when `limit` is a hint smaller than the array part: the size is then
 * the power of 2 above it (`limit` is never below half of it). */
#define LIMIT_IS_NOT_SIZE 0x80

static int mirror_checked; /* the check ran in this process */
static int mirror_works;   /* and found the mirror right */
static int mirror_on;      /* in use: works, and not turned off since */
static lua_Integer tables_done; /* read or written, confirmed by lmp__peek_confirm */

static size_t array_size(const table_header *t) {
  size_t size = t->limit;
  if (!(t->flags & LIMIT_IS_NOT_SIZE) || (size & (size - 1)) == 0) return size;
  while (size & (size - 1)) size &= size - 1;
  return size << 1;
}

/* The header of the table at idx, or 0 when it does not look like one. */
static int read_header(lua_State *L, int idx, table_header *t) {
  const void *at = lua_topointer(L, idx);
  if (at == NULL) return 0;
  memcpy(t, at, sizeof *t);
  return t->type_tag == TABLE_TAG;
}

int lmp__peek_array(lua_State *L, int idx, lmp_peek *p) {
  table_header t;
  if (!mirror_on || !read_header(L, idx, &t) || t.last_free != NULL) return 0;
  p->cells = t.array;
  p->size = array_size(&t);
  return 1;
}

int lmp__peek_array_part(lua_State *L, int idx, lmp_peek *p) {
  table_header t;
  if (!mirror_on || !read_header(L, idx, &t)) return 0;
  p->cells = t.array;
  p->size = array_size(&t);
  return p->size == 0 || p->cells != NULL;
}

static int new_array(lua_State *L, size_t count, lmp_peek *p) {
  table_header t;
  if (count == 0 || count > (size_t)INT_MAX) return 0;
  lua_createtable(L, (int)count, 0);
  if (!read_header(L, -1, &t) || t.last_free != NULL || array_size(&t) != count ||
      t.array == NULL) {
    lua_pop(L, 1);
    return 0;
  }
  p->cells = t.array;
  p->size = count;
  return 1;
}

int lmp__peek_new_array(lua_State *L, size_t count, lmp_peek *p) {
  return mirror_on && new_array(L, count, p);
}

/* Whether the value at idx is what `cell` holds: the same basic type (Lua
 * keeps it in the tag's low four bits), for numbers the same subtype and
 * bits, for tables and strings the same object. */
static int cell_matches(lua_State *L, int idx, lmp_peek_cell *cell) {
  int type = lua_type(L, idx);
  if ((cell->tag & 0x0f) != type) return 0;
  if (type == LUA_TNUMBER) {
    lmp_peek one = {cell, 1};
    if (lua_isinteger(L, idx))
      return lmp__peek_is_integer(&one, 0) && lmp__peek_integer(&one, 0) == lua_tointeger(L, idx);
    if (lmp__peek_is_float(&one, 0)) {
      lua_Number n = lua_tonumber(L, idx), m = lmp__peek_float(&one, 0);
      return memcmp(&n, &m, sizeof n) == 0;
    }
    return 0;
  }
  if (type == LUA_TTABLE || type == LUA_TSTRING) return cell->value.p == lua_topointer(L, idx);
  return 1;
}

static int key_matches(lua_State *L, int idx, const lmp_peek *p, lua_Integer key) {
  int ok;
  lua_rawgeti(L, idx, key);
  ok = key >= 1 && (size_t)key <= p->size ? cell_matches(L, -1, &p->cells[key - 1])
                                          : lua_isnil(L, -1);
  lua_pop(L, 1);
  return ok;
}

int lmp__peek_confirm(lua_State *L, int idx, const lmp_peek *p, size_t count) {
  if (count == 0 || !lua_checkstack(L, 1)) return 0;
  if (!key_matches(L, idx, p, 1) || !key_matches(L, idx, p, (lua_Integer)count) ||
      !key_matches(L, idx, p, (lua_Integer)count + 1)) {
    mirror_on = 0;
    return 0;
  }
  tables_done++;
  return 1;
}

int lmp__peek_confirm_range(lua_State *L, int idx, const lmp_peek *p, size_t first,
                            size_t count) {
  if (count == 0 || first == 0 || first - 1 + count > p->size || !lua_checkstack(L, 1)) return 0;
  if (!key_matches(L, idx, p, (lua_Integer)first) ||
      !key_matches(L, idx, p, (lua_Integer)(first + count - 1))) {
    mirror_on = 0;
    return 0;
  }
  tables_done++;
  return 1;
}

/* ---- the check at load time -------------------------------------------- */

#define PROBE_CELLS 32

typedef struct snapshot {
  int plain; /* no hash part */
  size_t size;
  lmp_peek_cell cells[PROBE_CELLS];
} snapshot;

/* What the mirror reads of the table at idx, copied before any call into
 * Lua (lua_rawgeti and lua_rawlen may move the limit). */
static int take_snapshot(lua_State *L, int idx, snapshot *s) {
  table_header t;
  if (!read_header(L, idx, &t)) return 0;
  s->plain = t.last_free == NULL;
  s->size = array_size(&t);
  if (s->size > PROBE_CELLS || (s->size > 0 && t.array == NULL)) return 0;
  if (s->size > 0) memcpy(s->cells, t.array, s->size * sizeof *s->cells);
  return 1;
}

/* Whether everything the mirror reads of the table at idx agrees with the
 * C API: every cell with lua_rawgeti, the absence of a hash part with the
 * keys lua_next gives (then exactly the non-nil cells), and the array part
 * again after those calls. `expect_plain` is 1 or 0 when the probe was
 * built with no hash part or with one, -1 when either can be. */
static int mirror_agrees(lua_State *L, int idx, int expect_plain) {
  snapshot s, again;
  lmp_peek p;
  size_t i, filled = 0, keys = 0;
  if (!take_snapshot(L, idx, &s)) return 0;
  if (expect_plain >= 0 && s.plain != expect_plain) return 0;
  p.cells = s.cells;
  p.size = s.size;
  for (i = 0; i < s.size; i++) {
    if (!key_matches(L, idx, &p, (lua_Integer)i + 1)) return 0;
    if (!lmp__peek_is_nil(&p, i)) filled++;
  }
  if (s.plain) {
    if (!key_matches(L, idx, &p, (lua_Integer)s.size + 1)) return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_Integer key = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : 0;
      lua_pop(L, 1);
      if (key < 1 || (size_t)key > s.size || lmp__peek_is_nil(&p, (size_t)key - 1)) {
        lua_pop(L, 1);
        return 0;
      }
      keys++;
    }
    if (keys != filled) return 0;
  }
  if (!take_snapshot(L, idx, &again) || again.plain != s.plain || again.size != s.size) return 0;
  for (i = 0; i < s.size; i++)
    if (again.cells[i].tag != s.cells[i].tag) return 0;
  return 1;
}

static void append_numbers(lua_State *L, int t, lua_Integer from, lua_Integer to, int floats) {
  lua_Integer i;
  for (i = from; i <= to; i++) {
    if (floats) lua_pushnumber(L, (lua_Number)i + 0.5);
    else lua_pushinteger(L, i * 1000);
    lua_rawseti(L, t, i);
  }
}

/* A table made by lmp__peek_new_array and written in place reads back
 * through the C API as written: the values, no other key, its length. */
static int written_probe_agrees(lua_State *L) {
  lmp_peek p;
  int t;
  size_t i;
  if (!new_array(L, 6, &p)) return 0;
  t = lua_gettop(L);
  for (i = 0; i < 6; i++) {
    if (i % 2) lmp__peek_set_float(&p, i, (lua_Number)i + 0.5);
    else lmp__peek_set_integer(&p, i, (lua_Integer)i * 1000 - 1);
  }
  for (i = 0; i < 6; i++) {
    lua_rawgeti(L, t, (lua_Integer)i + 1);
    if (i % 2 ? lua_isinteger(L, -1) || lua_tonumber(L, -1) != (lua_Number)i + 0.5
              : !lua_isinteger(L, -1) || lua_tointeger(L, -1) != (lua_Integer)i * 1000 - 1)
      return 0;
    lua_pop(L, 1);
  }
  return lua_rawlen(L, t) == 6 && mirror_agrees(L, t, 1);
}

/* Tables of every shape the mirror must read right, built by the running
 * Lua, each checked as built and again after what moves Lua's limit
 * (lua_rawlen looks for a border and may keep it as the limit). */
static int probes_agree(lua_State *L) {
  int t, ok;
  /* Presized, floats. */
  lua_createtable(L, 6, 0);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 6, 1);
  ok = mirror_agrees(L, t, 1) && lua_rawlen(L, t) == 6 && mirror_agrees(L, t, 1);
  /* Grown by appending: an array part of 8 with trailing nils, then a
   * limit of 5 below a size of 8. */
  lua_newtable(L);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 5, 0);
  ok = ok && mirror_agrees(L, t, 1) && lua_rawlen(L, t) == 5 && mirror_agrees(L, t, 1);
  /* A limit of 7 below 8, then raised again by setting key 8. */
  lua_newtable(L);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 7, 1);
  ok = ok && lua_rawlen(L, t) == 7 && mirror_agrees(L, t, 1);
  append_numbers(L, t, 8, 8, 1);
  ok = ok && mirror_agrees(L, t, 1);
  /* A value beyond the limit: 1..9 and 11 in 16 cells, where a border
   * search keeps 9 as the limit. */
  lua_createtable(L, 16, 0);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 9, 0);
  append_numbers(L, t, 11, 11, 0);
  ok = ok && mirror_agrees(L, t, 1);
  (void)lua_rawlen(L, t);
  ok = ok && mirror_agrees(L, t, 1);
  /* Mixed values. */
  lua_createtable(L, 5, 0);
  t = lua_gettop(L);
  lua_pushinteger(L, 1);
  lua_rawseti(L, t, 1);
  lua_pushnumber(L, 2.5);
  lua_rawseti(L, t, 2);
  lua_pushliteral(L, "x");
  lua_rawseti(L, t, 3);
  lua_pushboolean(L, 1);
  lua_rawseti(L, t, 4);
  lua_newtable(L);
  lua_rawseti(L, t, 5);
  ok = ok && mirror_agrees(L, t, 1);
  /* Holes. */
  lua_createtable(L, 8, 0);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 2, 1);
  append_numbers(L, t, 5, 5, 1);
  append_numbers(L, t, 8, 8, 1);
  ok = ok && mirror_agrees(L, t, 1);
  /* One integer among floats. */
  lua_newtable(L);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 20, 1);
  append_numbers(L, t, 10, 10, 0);
  ok = ok && mirror_agrees(L, t, 1);
  /* A hash part: a string key, then an integer key far past the array. */
  lua_createtable(L, 4, 1);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 4, 0);
  lua_pushinteger(L, 1);
  lua_setfield(L, t, "x");
  ok = ok && mirror_agrees(L, t, 0);
  lua_newtable(L);
  t = lua_gettop(L);
  append_numbers(L, t, 1, 4, 0);
  append_numbers(L, t, 100, 100, 0);
  ok = ok && mirror_agrees(L, t, 0);
  /* Made for writing in place, then written: what Lua reads back. */
  ok = ok && written_probe_agrees(L);
  /* Empty; and a hash part whose keys were all removed. */
  lua_newtable(L);
  ok = ok && mirror_agrees(L, lua_gettop(L), 1);
  lua_createtable(L, 0, 2);
  t = lua_gettop(L);
  lua_pushinteger(L, 1);
  lua_setfield(L, t, "a");
  lua_pushnil(L);
  lua_setfield(L, t, "a");
  ok = ok && mirror_agrees(L, t, -1);
  return ok;
}

static int mirror_fits_this_lua(lua_State *L) {
#if LUA_VERSION_NUM == 504
  int top = lua_gettop(L), ok;
  if (lua_version(L) != 504 || !lua_checkstack(L, 16)) return 0;
  ok = probes_agree(L);
  lua_settop(L, top);
  return ok;
#else
  (void)L;
  return 0;
#endif
}

/* core.table_peek([on]) -> on, count: whether number arrays are read and
 * written in place (the mirror passed its check and was not turned off),
 * and how many tables were so far. `on` false makes every table take the
 * C API path, for tests of both; true turns it back on if the check
 * passed. */
static int table_peek_binding(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) mirror_on = lua_toboolean(L, 1) && mirror_works;
  lua_pushboolean(L, mirror_on);
  lua_pushinteger(L, tables_done);
  return 2;
}

void lmp__open_table_peek(lua_State *L) {
  /* Lua's layout is the same for every state of a process: one check. */
  if (!mirror_checked) {
    mirror_works = mirror_fits_this_lua(L);
    mirror_on = mirror_works;
    mirror_checked = 1;
  }
  lua_pushcfunction(L, table_peek_binding);
  lua_setfield(L, -2, "table_peek");
}
