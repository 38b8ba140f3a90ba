/* A worker's side of its channel: plain blocking reads and writes, since a
 * worker does one thing at a time and needs no event loop. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel.h"
#include "lmp_internal.h"

#define RECV_BOX_META "lmp.RecvBuffer"

/* Before a worker sleeps in read(), it watches its channel for a short
 * while: on many machines waking a sleeping CPU costs more than a whole
 * round trip, and the next task usually follows the last result at once. */
static void wait_readable_briefly(int fd) {
  struct pollfd pfd;
  uint64_t deadline = uv_hrtime() + lmp__spin_ns();
  pfd.fd = fd;
  pfd.events = POLLIN;
  if (lmp__spin_ns() == 0) return;
  while (poll(&pfd, 1, 0) == 0 && uv_hrtime() < deadline) sched_yield();
}

static int read_full(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r == 0) return 0;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += r;
    n -= (size_t)r;
  }
  return 1;
}

static int write_full(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t r = write(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

void lmp__decode_frame(lua_State *L, const char *body, size_t n) {
  uint32_t message = n >= 4 ? lmp__u32_at(body) : 0;
  if (n < 4 || message > n - 4) luaL_error(L, "lmp: malformed frame on the channel");
  lmp__decode(L, body + 4, message);
  if (n - 4 - message > 0)
    lmp__decode(L, body + 4 + message, n - 4 - message);
  else
    lua_pushnil(L);
}

static int recv_box_gc(lua_State *L) {
  lmp__buffer_free(luaL_checkudata(L, 1, RECV_BOX_META));
  return 0;
}

/* core.channel_recv([fd]) -> message, payload (or nil); nothing at end of
 * file. */
static int core_channel_recv(lua_State *L) {
  int fd = (int)luaL_optinteger(L, 1, LMP_CHANNEL_FD), r;
  char header[LMP_FRAME_HEADER];
  uint64_t length;
  lmp_buffer *b;
  wait_readable_briefly(fd);
  r = read_full(fd, header, sizeof header);
  if (r == 0) return 0;
  if (r < 0) return luaL_error(L, "lmp: channel read failed: %s", strerror(-r));
  length = lmp__frame_length(header);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, RECV_BOX_META)) {
    lua_pushcfunction(L, recv_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (length > ((uint64_t)1 << 40) || lmp__buffer_reserve(b, (size_t)length) != 0)
    return luaL_error(L, "lmp: cannot receive a message of %d bytes", (int)length);
  r = read_full(fd, b->data, (size_t)length);
  if (r <= 0) return luaL_error(L, "lmp: channel closed in the middle of a message");
  lmp__decode_frame(L, b->data, (size_t)length);
  lmp__buffer_free(b);
  return 2;
}

/* core.channel_send(value [, fd]): encodes, then writes the whole frame. */
static int core_channel_send(lua_State *L) {
  int fd = (int)luaL_optinteger(L, 2, LMP_CHANNEL_FD), r;
  lmp_buffer *b;
  luaL_checkany(L, 1);
  lua_settop(L, 2);
  b = lmp__new_encode_box(L);
  if (lmp__buffer_reserve(b, LMP_FRAME_PREFIX) != 0) return luaL_error(L, "lmp: not enough memory");
  b->len = LMP_FRAME_PREFIX;
  if (lmp__encode(L, 1, b, "result") != 0) return lua_error(L);
  if (b->len - LMP_FRAME_PREFIX > UINT32_MAX)
    return luaL_error(L, "lmp: a message over 4 GB cannot be sent");
  lmp__frame_set_length(b->data, b->len - LMP_FRAME_HEADER);
  lmp__set_u32_at(b->data + LMP_FRAME_HEADER, (uint32_t)(b->len - LMP_FRAME_PREFIX));
  r = write_full(fd, b->data, b->len);
  lmp__buffer_free(b);
  if (r < 0) return luaL_error(L, "lmp: channel write failed: %s", strerror(-r));
  return 0;
}

static const luaL_Reg channel_functions[] = {
    {"channel_recv", core_channel_recv}, {"channel_send", core_channel_send}, {NULL, NULL}};

void lmp__open_channel(lua_State *L) {
  luaL_setfuncs(L, channel_functions, 0);
}
