#include "buffer.h"

#include <errno.h>
#include <stdlib.h>

#include "memory.h"

int lmp__buffer_reserve(lmp_buffer *b, size_t extra) {
  size_t need, cap;
  char *data;
  if (b->cap - b->len >= extra) return 0;
  if (extra > (size_t)-1 / 2 - b->len) return -ENOMEM;
  need = b->len + extra;
  cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  data = lmp__resize(b->data, b->cap, cap);
  if (data == NULL) return -ENOMEM;
  b->data = data;
  b->cap = cap;
  return 0;
}

void lmp__buffer_free(lmp_buffer *b) {
  if (b->data) lmp__release(b->data, b->cap);
  b->data = NULL;
  b->len = b->cap = 0;
}
