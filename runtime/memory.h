/* Big blocks on transparent huge pages: see memory.c. */
#ifndef LMP_MEMORY_H
#define LMP_MEMORY_H

#include <stddef.h>

#include <lua.h>

#define LMP_HUGE_MIN ((size_t)4 << 20)

/* Asks for huge pages on the 2 MB-aligned inside of [p, p + n) when n is
 * at least LMP_HUGE_MIN. Call it before the memory is first touched. */
void lmp__advise_huge(void *p, size_t n);

#endif
