/* Bytes arriving on a libuv stream, cut into frames (channel.h). */
#ifndef LMP_INBOX_H
#define LMP_INBOX_H

#include <uv.h>

#include "buffer.h"

typedef struct lmp_inbox {
  lmp_buffer bytes; /* read and not yet delivered: from `used` on */
  size_t used;
} lmp_inbox;

/* For a uv_alloc_cb: room at the end of the inbox, all of a large frame
 * once its length is known. An empty buffer on failure (libuv then reports
 * UV_ENOBUFS). */
void lmp__inbox_alloc(lmp_inbox *in, uv_buf_t *buf);

/* Calls deliver(ctx, body, length) for every complete frame, then keeps
 * what is left of an incomplete one. */
void lmp__inbox_frames(lmp_inbox *in, void (*deliver)(void *ctx, const char *body, size_t n),
                       void *ctx);

void lmp__inbox_free(lmp_inbox *in);

#endif
