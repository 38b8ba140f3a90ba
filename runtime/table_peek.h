/* Reading and writing a Lua 5.4 table's array part in place, for number
 * arrays (numbers.c). Through the C API each value of a million-number
 * table costs several calls into the interpreter, most of dumps' and
 * loads' time; in place, it is a load and a compare, or two stores. Lua does not publish its table
 * layout, so this header and table_peek.c keep a minimal mirror of it,
 * and nothing else in lmp knows it. The mirror is only used once a check
 * at load time (lmp__open_table_peek) found that, on probe tables built by
 * the running Lua, everything it reads matches what the C API says;
 * otherwise it stays off for the process and callers take the API path. */
#ifndef LMP_TABLE_PEEK_H
#define LMP_TABLE_PEEK_H

#include <stddef.h>
#include <string.h>

#include <lua.h>

/* A table's array part as Lua 5.4 keeps it: `size` cells, each a value
 * (8 bytes: an integer, a float or a pointer) and a type tag byte after
 * it. Only the accessors below look inside a cell. */
typedef struct lmp_peek_cell {
  union {
    lua_Integer i;
    lua_Number n;
    void *p;
  } value;
  unsigned char tag;
} lmp_peek_cell;

typedef struct lmp_peek {
  lmp_peek_cell *cells;
  size_t size;
} lmp_peek;

/* Lua 5.4's tags: the basic type in the low four bits, the variant above;
 * every nil variant (nil, an empty slot) has basic type 0. */
#define LMP_PEEK_TAG_INTEGER 0x03
#define LMP_PEEK_TAG_FLOAT 0x13

/* Whether the mirror is on and the table at idx (a table, with no
 * metatable: the caller checked) has no hash part, so that its keys are
 * exactly the non-nil cells of its array part, cell i holding key i + 1.
 * Fills *p then. Reads only; calls nothing in Lua. */
int lmp__peek_array(lua_State *L, int idx, lmp_peek *p);

/* The array part of the table at idx (a table: the caller checked),
 * whatever its hash part holds: for writing keys 1 .. p->size, which Lua
 * keeps in the array part always, in place. 0 when the mirror is off. */
int lmp__peek_array_part(lua_State *L, int idx, lmp_peek *p);

/* Pushes a new table with an array part of `count` cells (at least 1),
 * all nil, and fills *p for the caller to write them with
 * lmp__peek_set_float and lmp__peek_set_integer; numbers need no write
 * barrier, as they are not collected. Returns 0, pushing nothing, when
 * the mirror is off. The table must stay on the stack meanwhile. */
int lmp__peek_new_array(lua_State *L, size_t count, lmp_peek *p);

/* Before trusting what was read of the table at idx: asks the C API for
 * keys 1, count and count + 1, and compares with cells 0 and count - 1
 * (and nil); after a table was written in place, the same. A mismatch
 * would mean the mirror is wrong after all: it is turned off for the
 * process and 0 returned. 1 when they agree (counted in what
 * core.table_peek reports). */
int lmp__peek_confirm(lua_State *L, int idx, const lmp_peek *p, size_t count);

/* The same for cells first - 1 .. first + count - 2 of a table read in
 * place (keys first .. first + count - 1, all inside its array part):
 * asks the C API for keys first and first + count - 1. */
int lmp__peek_confirm_range(lua_State *L, int idx, const lmp_peek *p, size_t first,
                            size_t count);

static inline int lmp__peek_is_float(const lmp_peek *p, size_t i) {
  return p->cells[i].tag == LMP_PEEK_TAG_FLOAT;
}

static inline int lmp__peek_is_integer(const lmp_peek *p, size_t i) {
  return p->cells[i].tag == LMP_PEEK_TAG_INTEGER;
}

static inline int lmp__peek_is_nil(const lmp_peek *p, size_t i) {
  return (p->cells[i].tag & 0x0f) == 0;
}

/* The bits are copied out rather than read through Lua's union: the
 * compiler then assumes nothing about who else writes them. */
static inline lua_Number lmp__peek_float(const lmp_peek *p, size_t i) {
  lua_Number n;
  memcpy(&n, &p->cells[i].value, sizeof n);
  return n;
}

static inline lua_Integer lmp__peek_integer(const lmp_peek *p, size_t i) {
  lua_Integer v;
  memcpy(&v, &p->cells[i].value, sizeof v);
  return v;
}

static inline void lmp__peek_set_float(lmp_peek *p, size_t i, lua_Number n) {
  memcpy(&p->cells[i].value, &n, sizeof n);
  p->cells[i].tag = LMP_PEEK_TAG_FLOAT;
}

static inline void lmp__peek_set_integer(lmp_peek *p, size_t i, lua_Integer v) {
  memcpy(&p->cells[i].value, &v, sizeof v);
  p->cells[i].tag = LMP_PEEK_TAG_INTEGER;
}

/* Checks the mirror against the running Lua (once a process) and adds
 * core.table_peek to the table on top. */
void lmp__open_table_peek(lua_State *L);

#endif
