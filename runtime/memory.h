/* Big blocks on transparent huge pages: see memory.c. */
#ifndef LMP_MEMORY_H
#define LMP_MEMORY_H

#include <stddef.h>

#include <lua.h>

#define LMP_HUGE_MIN ((size_t)4 << 20)

/* Blocks whose size decides where they live: malloc below LMP_HUGE_MIN,
 * big blocks (see memory.c) from there on. The caller always knows a
 * block's size and gives it back: realloc and free for such blocks. */
void *lmp__resize(void *p, size_t osize, size_t nsize);
void lmp__release(void *p, size_t size);

#endif
