/* Descriptors inside values: how a value that holds an open file (an
 * lmp.Connection, and so a Queue, a lock or a shared Value holding one)
 * travels to another process. While a message is encoded for a channel
 * that carries descriptors, the value's __lmp_serialize asks for a slot
 * (core.pass_fd(fd) -> slot) and writes the slot number in its data
 * instead of the descriptor's number, which means nothing elsewhere; the
 * collector keeps a duplicate of the descriptor until the frame is sent
 * (one duplicate, counted, for every collector of the same open file).
 * On arrival the receiver offers the descriptors that came with the frame,
 * in the same order, and the value's constructor takes its own
 * (core.take_fd(slot) -> fd). Whatever no value took is closed by its box.
 * Part of the value format layer; uses no OS call but fcntl, fstat, close. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
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

/* The duplicates collectors make, shared: a payload keeps its
 * descriptors until it is collected, and a map over ten thousand items
 * that each hold the same queue must not hold ten thousand duplicates of
 * its socket. One duplicate serves every box that collected the same
 * open file (the same source descriptor, still open on the same device
 * and inode), counted; the last box to let go closes it. The table is
 * this process's: a forked worker starts with an empty one (the
 * duplicates it inherited were closed when it started). */
typedef struct shared_copy {
  int source, copy, refs;
  dev_t dev;
  ino_t ino;
} shared_copy;
static shared_copy *copies;
static int copy_count, copy_room;
/* Bumped when a forked worker lets go of its parent's descriptors. */
static lua_Integer generation;

/* In a forked worker: the parent's table is this process's copy, and the
 * duplicates it lists were closed with every inherited descriptor, so it
 * is freed; boxes inherited from the parent release through the new,
 * empty table, which does not know them (release_copy). */
void lmp__descriptors_forget_parent(void) {
  free(copies);
  copies = NULL;
  copy_count = copy_room = 0;
  generation++;
}

/* A duplicate of source (whose status is st) for one more box: shared
 * when there is one. Returns it, or -errno. */
static int share_copy(int source, const struct stat *st) {
  int i, copy;
  for (i = 0; i < copy_count; i++) {
    shared_copy *c = &copies[i];
    if (c->source == source && c->dev == st->st_dev && c->ino == st->st_ino) {
      c->refs++;
      return c->copy;
    }
  }
  if (copy_count == copy_room) {
    int room = copy_room ? 2 * copy_room : 16;
    shared_copy *more = realloc(copies, (size_t)room * sizeof *more);
    if (more == NULL) return -ENOMEM;
    copies = more;
    copy_room = room;
  }
  if ((copy = fcntl(source, F_DUPFD_CLOEXEC, 0)) < 0) return -errno;
  copies[copy_count].source = source;
  copies[copy_count].copy = copy;
  copies[copy_count].refs = 1;
  copies[copy_count].dev = st->st_dev;
  copies[copy_count].ino = st->st_ino;
  copy_count++;
  return copy;
}

/* A box lets go of a shared duplicate. One this process does not know (a
 * forked child's inherited box) is not its own to close. */
static void release_copy(int copy) {
  int i;
  for (i = 0; i < copy_count; i++) {
    if (copies[i].copy != copy) continue;
    if (--copies[i].refs == 0) {
      close(copy);
      copies[i] = copies[--copy_count];
    }
    return;
  }
}

void lmp__descriptors_close(lmp_descriptors *d) {
  int i;
  for (i = 0; i < d->n; i++) {
    if (d->fd[i] >= 0) {
      if (d->shared[i]) release_copy(d->fd[i]);
      else close(d->fd[i]);
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

/* Empties the box at idx for its next use. */
static void reset_descriptors(lua_State *L, int idx) {
  lmp_descriptors *d = lua_touserdata(L, idx);
  lmp__descriptors_close(d);
  d->base = 0;
  if (collecting == d) collecting = NULL;
  if (offered == d) offered = NULL;
}

void lmp__give_back_descriptors(lua_State *L, int idx) {
  reset_descriptors(L, idx);
  lua_pushvalue(L, idx);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &spare_key);
}

lmp_descriptors *lmp__take_descriptors_at(lua_State *L, int slot) {
  lmp_descriptors *d;
  if (lua_type(L, slot) == LUA_TUSERDATA) {
    lua_pushvalue(L, slot);
    lua_pushnil(L);
    lua_replace(L, slot);
    d = lua_touserdata(L, -1);
    d->n = d->base = 0;
    return d;
  }
  return lmp__push_descriptors(L);
}

void lmp__give_back_descriptors_at(lua_State *L, int idx, int slot) {
  reset_descriptors(L, idx);
  lua_pushvalue(L, idx);
  lua_replace(L, slot);
}

int lmp__descriptors_add(lmp_descriptors *d, int fd) {
  if (d->n >= LMP_DESCRIPTORS_MAX) return -EMFILE;
  d->fd[d->n] = fd;
  d->source[d->n] = -1;
  d->shared[d->n] = 0;
  d->n++;
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

/* Pushes the identity of the open file st describes (see fd_identity). */
static void push_identity(lua_State *L, const struct stat *st) {
  lua_pushfstring(L, "%I:%I", (lua_Integer)st->st_dev, (lua_Integer)st->st_ino);
}

/* core.pass_fd(fd) -> slot (from 1), identity: the slot of fd among the descriptors
 * the message being encoded carries; the same descriptor twice in one
 * message takes one slot (slots count from the collector's base: a frame's
 * payload numbers its own from 1 after the message's). Raises when the encoding under way carries no
 * descriptors (lmp.dumps, a Pipe, a Queue). */
static int core_pass_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), copy, i;
  lmp_descriptors *d = collecting;
  struct stat st;
  if (d == NULL)
    return luaL_error(L, "lmp: an open descriptor travels only to pool workers and lmp.Process "
                         "children (as an argument, a result or an initarg), not through lmp.dumps, "
                         "a Pipe or a Queue");
  if (fstat(fd, &st) != 0) return luaL_error(L, "lmp: cannot pass descriptor %d: %s", fd, strerror(errno));
  for (i = d->base; i < d->n; i++)
    if (d->source[i] == fd) {
      lua_pushinteger(L, i - d->base + 1);
      push_identity(L, &st);
      return 2;
    }
  if (d->n >= LMP_DESCRIPTORS_MAX)
    return luaL_error(L, "lmp: a message carries at most %d descriptors (objects holding "
                         "them: send fewer in one task, a smaller chunksize)", LMP_DESCRIPTORS_MAX);
  copy = share_copy(fd, &st);
  if (copy < 0) return luaL_error(L, "lmp: cannot pass descriptor %d: %s", fd, strerror(-copy));
  lmp__descriptors_add(d, copy);
  d->source[d->n - 1] = fd;
  d->shared[d->n - 1] = 1;
  lua_pushinteger(L, d->n - d->base);
  push_identity(L, &st);
  return 2;
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
  push_identity(L, &st);
  return 1;
}

/* core.descriptor_generation() -> a number that changes when this process
 * is a forked worker that let go of its parent's descriptors: what the
 * parent's connections said about their descriptors holds no more. */
static int core_descriptor_generation(lua_State *L) {
  lua_pushinteger(L, generation);
  return 1;
}

static const luaL_Reg descriptors_functions[] = {
    {"pass_fd", core_pass_fd}, {"take_fd", core_take_fd}, {"fd_identity", core_fd_identity},
    {"descriptor_generation", core_descriptor_generation},
    {NULL, NULL}};

void lmp__open_descriptors(lua_State *L) {
  luaL_setfuncs(L, descriptors_functions, 0);
}
