/* Descriptors inside values: how a value that holds an open file (an
 * lmp.Connection, and so a Queue, a lock or a shared Value holding one)
 * travels to another process. While a message is encoded for a channel
 * that carries descriptors, the value's __lmp_serialize asks for a slot
 * (core.pass_fd(fd) -> slot) and writes the slot number in its data
 * instead of the descriptor's number, which means nothing elsewhere; the
 * collector keeps a duplicate of the descriptor until the frame is sent.
 * On arrival the receiver offers the descriptors that came with the frame,
 * in the same order, and the value's constructor takes its own
 * (core.take_fd(slot) -> fd). Whatever no value took is closed by its box.
 * Part of the value format layer; uses no OS call but fcntl, fstat, close. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "value.h"

#define DESCRIPTORS_META "lmp.Descriptors"

/* The collector of the encoding under way, and the descriptors offered to
 * the decoding under way; NULL when none. A box that an error left
 * current clears its pointer when it is collected (descriptors_gc), so
 * neither ever points at freed memory. */
static lmp_descriptors *collecting, *offered;

/* Descriptors held in boxes, process-wide: a payload keeps its own until
 * the collector finds it, and too many at once would exhaust the
 * process's descriptors before the collector runs. */
static int held;

void lmp__descriptors_close(lmp_descriptors *d) {
  int i;
  for (i = 0; i < d->n; i++) {
    if (d->fd[i] >= 0) {
      close(d->fd[i]);
      held--;
    }
    d->fd[i] = -1;
  }
  d->n = 0;
}

static int descriptors_gc(lua_State *L) {
  lmp_descriptors *d = lua_touserdata(L, 1);
  lmp__descriptors_close(d);
  if (collecting == d) collecting = NULL;
  if (offered == d) offered = NULL;
  return 0;
}

lmp_descriptors *lmp__push_descriptors(lua_State *L) {
  lmp_descriptors *d = lua_newuserdatauv(L, sizeof *d, 0);
  d->n = d->base = 0;
  if (luaL_newmetatable(L, DESCRIPTORS_META)) {
    lua_pushcfunction(L, descriptors_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return d;
}

/* The registry slot of the state's spare box, emptied while an encoding
 * uses it. */
static const char spare_key = 'd';

lmp_descriptors *lmp__take_descriptors(lua_State *L) {
  lmp_descriptors *d;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &spare_key) == LUA_TUSERDATA) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &spare_key);
    d = lua_touserdata(L, -1);
    d->n = d->base = 0;
    return d;
  }
  lua_pop(L, 1);
  return lmp__push_descriptors(L);
}

void lmp__give_back_descriptors(lua_State *L, int idx) {
  lmp_descriptors *d = lua_touserdata(L, idx);
  lmp__descriptors_close(d);
  d->base = 0;
  if (collecting == d) collecting = NULL;
  if (offered == d) offered = NULL;
  lua_pushvalue(L, idx);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &spare_key);
}

int lmp__descriptors_add(lmp_descriptors *d, int fd) {
  if (d->n >= LMP_DESCRIPTORS_MAX) return -EMFILE;
  d->fd[d->n] = fd;
  d->source[d->n] = -1;
  d->n++;
  held++;
  return 0;
}

lmp_descriptors *lmp__descriptors_collect(lmp_descriptors *d) {
  lmp_descriptors *previous = collecting;
  collecting = d;
  return previous;
}

lmp_descriptors *lmp__descriptors_offer(lmp_descriptors *d) {
  lmp_descriptors *previous = offered;
  offered = d;
  return previous;
}

/* core.pass_fd(fd) -> slot (from 1): the slot of fd among the descriptors
 * the message being encoded carries; the same descriptor twice in one
 * message takes one slot (slots count from the collector's base: a frame's
 * payload numbers its own from 1 after the message's). Raises when the encoding under way carries no
 * descriptors (lmp.dumps, a Pipe, a Queue). */
static int core_pass_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), copy, i;
  lmp_descriptors *d = collecting;
  if (d == NULL)
    return luaL_error(L, "lmp: an open descriptor travels only to pool workers and lmp.Process "
                         "children (as an argument, a result or an initarg), not through lmp.dumps, "
                         "a Pipe or a Queue");
  for (i = d->base; i < d->n; i++)
    if (d->source[i] == fd) {
      lua_pushinteger(L, i - d->base + 1);
      return 1;
    }
  if (d->n >= LMP_DESCRIPTORS_MAX)
    return luaL_error(L, "lmp: a message carries at most %d descriptors", LMP_DESCRIPTORS_MAX);
  /* A payload may be collected long after it was sent: when many hold
   * descriptors, a full collection closes those nobody needs first. */
  if (held >= LMP_DESCRIPTORS_HELD_MAX) lua_gc(L, LUA_GCCOLLECT);
  copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return luaL_error(L, "lmp: cannot pass descriptor %d: %s", fd, strerror(errno));
  lmp__descriptors_add(d, copy);
  d->source[d->n - 1] = fd;
  lua_pushinteger(L, d->n - d->base);
  return 1;
}

/* core.take_fd(slot) -> fd: the descriptor that arrived in that slot of
 * the message being decoded, now the caller's to close. Raises when there
 * is none (malformed data, or a slot taken already). */
static int core_take_fd(lua_State *L) {
  lua_Integer slot = luaL_checkinteger(L, 1);
  lmp_descriptors *d = offered;
  int fd;
  if (d == NULL || slot < 1 || slot > d->n || d->fd[slot - 1] < 0)
    return luaL_error(L, "lmp: descriptor slot %d did not arrive with the message", (int)slot);
  fd = d->fd[slot - 1];
  d->fd[slot - 1] = -1;
  held--;
  lua_pushinteger(L, fd);
  return 1;
}

/* core.fd_identity(fd) -> a string naming the open file's OS object
 * (device and inode): two descriptors of one socket, memory file or lock
 * file give the same string, whichever process they came from. */
static int core_fd_identity(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  struct stat st;
  if (fstat(fd, &st) != 0) return luaL_error(L, "lmp: descriptor %d: %s", fd, strerror(errno));
  lua_pushfstring(L, "%I:%I", (lua_Integer)st.st_dev, (lua_Integer)st.st_ino);
  return 1;
}

static const luaL_Reg descriptors_functions[] = {
    {"pass_fd", core_pass_fd}, {"take_fd", core_take_fd}, {"fd_identity", core_fd_identity},
    {NULL, NULL}};

void lmp__open_descriptors(lua_State *L) {
  luaL_setfuncs(L, descriptors_functions, 0);
}
