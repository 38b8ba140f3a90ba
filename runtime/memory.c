/* Big blocks on transparent huge pages.
 *
 * A 100 MB string crossing a pipe is written into fresh memory three times
 * (the receive buffer, the Lua string, the sender's encoding), and fresh
 * memory from the kernel costs a page fault and a zeroing per 4 kB page:
 * measured with perf, those faults were over half of a big transfer.
 * Asking for huge pages on big blocks makes it one fault per 2 MB. glibc
 * does the same with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, which cannot be
 * turned on once a process runs. Where the kernel's setting is "never",
 * madvise is a no-op; blocks below LMP_HUGE_MIN are left alone. */
#include "memory.h"

#include "lmp.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE ((uintptr_t)2 << 20)

void lmp__advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
  uintptr_t from = ((uintptr_t)p + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  uintptr_t to = ((uintptr_t)p + n) & ~(HUGE_PAGE - 1);
  if (n >= LMP_HUGE_MIN && to > from) madvise((void *)from, to - from, MADV_HUGEPAGE);
#else
  (void)p;
  (void)n;
#endif
}

/* lauxlib's allocator, plus the advice for big blocks; interchangeable with
 * it (both are realloc and free), so lua_setallocf may swap them. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  void *p;
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  p = realloc(ptr, nsize);
  if (p != NULL && nsize >= LMP_HUGE_MIN && nsize > osize) lmp__advise_huge(p, nsize);
  return p;
}

void lmp_use_huge_pages(lua_State *L) {
  lua_setallocf(L, lua_alloc, NULL);
}
