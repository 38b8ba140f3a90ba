/* Big blocks: mapped directly, on transparent huge pages, and kept for the
 * next big message.
 *
 * A 100 MB string crossing a pipe is written into fresh memory twice on
 * each side (the receive buffer, the Lua string), and fresh memory costs a
 * page fault and a zeroing per page: measured with perf, those were over
 * half of a big transfer. Huge pages make it one fault per 2 MB instead of
 * 512. Fresh memory is also slow in another way on a VM: zeroing pages the
 * host has to back again ran at a fifth of the usual speed (perf: 65% of a
 * worker's time in clear_page_erms, the same fault count as a fast run),
 * so a 100 MB argument took 300 ms one time in three. Blocks kept after
 * use and reused take no fault at all: 100 MB each way then runs at about
 * 2.7 GB/s instead of 1.7.
 *
 * So blocks of LMP_HUGE_MIN bytes and more are mmap'd (a header in front
 * records the mapping's size), and up to KEEP_BLOCKS of them are kept when
 * freed, marked MADV_FREE: the kernel takes their memory back if it needs
 * it, without asking; until then the next big block reuses it as it is.
 * Smaller blocks are malloc's. */
#include "memory.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "lmp.h"

#define HUGE_PAGE ((size_t)2 << 20)
#define HEADER 64 /* keeps the data 64-byte aligned */
#define KEEP_BLOCKS 2
#define KEEP_BYTES ((size_t)1 << 30)

typedef struct big_header {
  size_t size; /* of the whole mapping, header included */
} big_header;

static struct {
  char *base;
  size_t size;
} kept[KEEP_BLOCKS];

static size_t mapping_for(size_t n) {
  return (n + HEADER + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
}

static void advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
  uintptr_t from = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
  uintptr_t to = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_PAGE - 1);
  if (n >= LMP_HUGE_MIN && to > from) madvise((void *)from, to - from, MADV_HUGEPAGE);
#else
  (void)p;
  (void)n;
#endif
}

static void *big_alloc(size_t n) {
  size_t size = mapping_for(n);
  char *base = NULL;
  int i, best = -1;
  /* The smallest kept block that fits without wasting most of it. */
  for (i = 0; i < KEEP_BLOCKS; i++) {
    if (kept[i].base && kept[i].size >= size && kept[i].size / 4 <= size &&
        (best < 0 || kept[i].size < kept[best].size))
      best = i;
  }
  if (best >= 0) {
    base = kept[best].base;
    size = kept[best].size;
    kept[best].base = NULL;
  } else {
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return NULL;
    advise_huge(base, size);
  }
  ((big_header *)base)->size = size;
  return base + HEADER;
}

static void big_free(void *p) {
  char *base;
  size_t size, total = 0;
  int i, slot = -1;
  if (p == NULL) return;
  base = (char *)p - HEADER;
  size = ((big_header *)base)->size;
  for (i = 0; i < KEEP_BLOCKS; i++) {
    if (kept[i].base) total += kept[i].size;
    if (slot >= 0 && kept[slot].base == NULL) continue; /* a free slot is best */
    if (kept[i].base == NULL || slot < 0 || kept[i].size < kept[slot].size) slot = i;
  }
  /* Keep it in a free slot, or in place of a smaller kept block. */
  if (kept[slot].base && kept[slot].size >= size) slot = -1;
  if (slot >= 0 && total - (kept[slot].base ? kept[slot].size : 0) + size <= KEEP_BYTES
#ifdef MADV_FREE
      && madvise(base, size, MADV_FREE) == 0
#else
      && 0
#endif
  ) {
    if (kept[slot].base) munmap(kept[slot].base, kept[slot].size);
    kept[slot].base = base;
    kept[slot].size = size;
    return;
  }
  munmap(base, size);
}

static void *big_realloc(void *p, size_t n) {
  char *base = (char *)p - HEADER;
  size_t size = ((big_header *)base)->size, want = mapping_for(n);
  if (want <= size) return p;
  base = mremap(base, size, want, MREMAP_MAYMOVE);
  if (base == MAP_FAILED) return NULL;
  advise_huge(base + size, want - size);
  ((big_header *)base)->size = want;
  return base + HEADER;
}

/* Moves a block between malloc and the big blocks when its size crosses
 * LMP_HUGE_MIN; `osize` is its current size (0 for none). */
void *lmp__resize(void *p, size_t osize, size_t nsize) {
  int was_big = osize >= LMP_HUGE_MIN, big = nsize >= LMP_HUGE_MIN;
  void *q;
  if (p == NULL) return big ? big_alloc(nsize) : malloc(nsize);
  if (was_big && big) return big_realloc(p, nsize);
  if (!was_big && !big) return realloc(p, nsize);
  q = big ? big_alloc(nsize) : malloc(nsize);
  if (q == NULL) return NULL;
  memcpy(q, p, osize < nsize ? osize : nsize);
  if (was_big) big_free(p);
  else free(p);
  return q;
}

void lmp__release(void *p, size_t size) {
  if (size >= LMP_HUGE_MIN) big_free(p);
  else free(p);
}

/* lauxlib's allocator, with big blocks as above. Lua gives the current
 * size of every block it frees or resizes (when ptr is NULL, osize is a
 * type tag, not a size). */
static void *big_block_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    if (ptr) lmp__release(ptr, osize);
    return NULL;
  }
  return lmp__resize(ptr, ptr ? osize : 0, nsize);
}

void lmp_use_huge_pages(lua_State *L) {
  lua_setallocf(L, big_block_alloc, NULL);
}
