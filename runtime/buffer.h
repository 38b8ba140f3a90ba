/* A growable byte buffer: the one place that owns bytes in flight. */
#ifndef LMP_BUFFER_H
#define LMP_BUFFER_H

#include <stddef.h>
#include <string.h>

typedef struct lmp_buffer {
  char *data;
  size_t len;
  size_t cap;
} lmp_buffer;

/* Makes room for `extra` more bytes. Returns 0, or -ENOMEM leaving the
 * buffer as it was. */
int lmp__buffer_reserve(lmp_buffer *b, size_t extra);
/* Frees the bytes; the buffer is empty and reusable afterwards. */
void lmp__buffer_free(lmp_buffer *b);

static inline int lmp__buffer_append(lmp_buffer *b, const void *p, size_t n) {
  if (b->cap - b->len < n && lmp__buffer_reserve(b, n) != 0) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

#endif
