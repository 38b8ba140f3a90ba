/* Descriptors a new process must not inherit: a child started by fork
 * (a forked worker, the resource tracker) closes all but its own. */
#include <sys/syscall.h>
#include <unistd.h>

#include "transport.h"

void lmp__close_from(int from) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0) return;
#endif
  {
    /* The kernel lacks close_range: one by one, up to a sane limit. */
    long max = sysconf(_SC_OPEN_MAX), fd;
    if (max < 0 || max > 65536) max = 65536;
    for (fd = from; fd < max; fd++) close((int)fd);
  }
}
