/* A test-only C module for the failure tests: what a buggy C extension or
 * a careless task does to a worker. crash.segfault() dies of SIGSEGV;
 * crash.write(fd, bytes) writes raw bytes to a descriptor (garbage on a
 * worker's channel); crash.fork_sleeper(seconds) forks a child that keeps
 * every descriptor, the worker's channel included, and sleeps;
 * crash.userdata(metatable) makes a userdata with that metatable, which
 * plain Lua cannot, so that a spec can give a userdata a __lmp_serialize
 * that misbehaves (raises, exits, crashes) while it is being sent;
 * crash.ring_scribble(seconds) starts a thread that writes random bytes
 * over the worker's ring towards the main process, as a worker gone bad
 * would, while the main process reads it. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "ring.h"

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

/* The worker's ring: the mapping of the memfd named lmp-ring. */
static lmp_ring *find_ring(void) {
  char line[512];
  unsigned long start = 0;
  FILE *maps = fopen("/proc/self/maps", "r");
  if (maps == NULL) return NULL;
  while (fgets(line, sizeof line, maps))
    if (strstr(line, "lmp-ring") && sscanf(line, "%lx-", &start) == 1) break;
    else start = 0;
  fclose(maps);
  return (lmp_ring *)start;
}

struct scribble {
  lmp_ring *ring;
  double seconds;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Random bytes in the frames towards the main process, heads included,
 * all the time; from half the time on, a tail no ring can have
 * (the main process must see it: the worker's own answers only add to
 * it). */
static void *scribble(void *arg) {
  struct scribble *s = arg;
  char *data = (char *)s->ring + 4096 + LMP_RING_BYTES;
  uint64_t x = (uint64_t)getpid() * 2654435761u + 1;
  double start = now(), end = start + s->seconds;
  while (now() < end) {
    /* Mostly where the frames are: around the last published one. */
    uint64_t tail = __atomic_load_n(&s->ring->to_main.tail, __ATOMIC_RELAXED);
    for (int i = 0; i < 64; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      __atomic_store_n(data + (tail + (x >> 8) % 4096 - 2048) % LMP_RING_BYTES, (char)x,
                       __ATOMIC_RELAXED);
    }
    if (now() > start + s->seconds / 2) {
      uint64_t head = __atomic_load_n(&s->ring->to_main.head, __ATOMIC_RELAXED);
      __atomic_store_n(&s->ring->to_main.tail, head + 3 * (uint64_t)LMP_RING_BYTES + (x & 0xffff),
                       __ATOMIC_RELEASE);
    }
  }
  /* The main process may be asleep: ring its wake-up (the worker's only
   * eventfd) as a worker that published would. */
  for (int fd = 0; fd < 1024; fd++) {
    char path[64], target[64];
    ssize_t n;
    uint64_t one = 1;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    n = readlink(path, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = 0;
    if (strcmp(target, "anon_inode:[eventfd]") == 0 && write(fd, &one, sizeof one) < 0) (void)0;
  }
  free(s);
  return NULL;
}

static int crash_ring_scribble(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  struct scribble *s;
  pthread_t thread;
  lmp_ring *ring = find_ring();
  if (ring == NULL) return luaL_error(L, "this worker has no ring");
  if ((s = malloc(sizeof *s)) == NULL) return luaL_error(L, "not enough memory");
  s->ring = ring;
  s->seconds = seconds;
  if (pthread_create(&thread, NULL, scribble, s) != 0) {
    free(s);
    return luaL_error(L, "cannot start a thread");
  }
  pthread_detach(thread);
  return 0;
}

int luaopen_crash(lua_State *L) {
  static const luaL_Reg functions[] = {{"segfault", crash_segfault},
                                       {"write", crash_write},
                                       {"fork_sleeper", crash_fork_sleeper},
                                       {"userdata", crash_userdata},
                                       {"ring_scribble", crash_ring_scribble},
                                       {NULL, NULL}};
  luaL_newlib(L, functions);
  return 1;
}
