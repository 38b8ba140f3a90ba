/* A test-only C module for the failure tests: what a buggy C extension or
 * a careless task does to a worker. crash.segfault() dies of SIGSEGV;
 * crash.write(fd, bytes) writes raw bytes to a descriptor (garbage on a
 * worker's channel); crash.fork_sleeper(seconds) forks a child that keeps
 * every descriptor, the worker's channel included, and sleeps;
 * crash.userdata(metatable) makes a userdata with that metatable, which
 * plain Lua cannot, so that a spec can give a userdata a __lmp_serialize
 * that misbehaves (raises, exits, crashes) while it is being sent. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static int crash_segfault(lua_State *L) {
  (void)L;
  raise(SIGSEGV);
  return 0;
}

static int crash_write(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  size_t n, done = 0;
  const char *bytes = luaL_checklstring(L, 2, &n);
  while (done < n) {
    ssize_t r = write(fd, bytes + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return luaL_error(L, "write: %s", strerror(errno));
    done += (size_t)r;
  }
  return 0;
}

/* -> pid of the child, which exits after `seconds` (or when killed). */
static int crash_fork_sleeper(lua_State *L) {
  unsigned seconds = (unsigned)luaL_checkinteger(L, 1);
  pid_t pid = fork();
  if (pid < 0) return luaL_error(L, "fork: %s", strerror(errno));
  if (pid == 0) {
    sleep(seconds);
    _exit(0);
  }
  lua_pushinteger(L, pid);
  return 1;
}

static int crash_userdata(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_newuserdatauv(L, 1, 0);
  lua_pushvalue(L, 1);
  lua_setmetatable(L, -2);
  return 1;
}

int luaopen_crash(lua_State *L) {
  static const luaL_Reg functions[] = {{"segfault", crash_segfault},
                                       {"write", crash_write},
                                       {"fork_sleeper", crash_fork_sleeper},
                                       {"userdata", crash_userdata},
                                       {NULL, NULL}};
  luaL_newlib(L, functions);
  return 1;
}
