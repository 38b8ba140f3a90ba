/* Bytes arriving on a stream, cut into frames (channel.h): a libuv stream
 * in the main process, a worker's blocking channel in the worker. */
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
 * what is left of an incomplete one. Returns 0, or -1 when the next frame
 * says it is longer than LMP_FRAME_MAX (the stream carries garbage: the
 * caller must stop reading it). */
int lmp__inbox_frames(lmp_inbox *in, void (*deliver)(void *ctx, const char *body, size_t n),
                       void *ctx);

/* Takes the next complete frame, if one has arrived: sets *body and *n and
 * returns 1; its bytes stay valid until the inbox is next touched.
 * Returns 0 otherwise, and -1 when the next frame says it is longer than
 * LMP_FRAME_MAX. */
int lmp__inbox_next(lmp_inbox *in, const char **body, size_t *n);

/* Drops what was taken, keeping what is left of an incomplete frame. */
void lmp__inbox_compact(lmp_inbox *in);

void lmp__inbox_free(lmp_inbox *in);

#endif
