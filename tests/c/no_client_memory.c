/* A test-only library, preloaded into a process that serves requests
 * (core.listen): the first $LMP_NO_CLIENT_MEMORY allocations of a
 * server's client record fail, as they would with no memory left, so that
 * a spec can see what the server does with a connection it has no memory
 * for. Every other allocation goes to the C library's own. */
#include <stdlib.h>

#include "server.h"

extern void *__libc_calloc(size_t count, size_t size);

static int failures = -1; /* -1: not read from the environment yet */

void *calloc(size_t count, size_t size) {
  if (count == 1 && size == sizeof(client)) {
    if (failures < 0) {
      const char *env = getenv("LMP_NO_CLIENT_MEMORY");
      failures = env ? atoi(env) : 0;
    }
    if (failures > 0) {
      failures--;
      return NULL;
    }
  }
  return __libc_calloc(count, size);
}
