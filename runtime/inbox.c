#include "inbox.h"

#include <string.h>

#include <lauxlib.h>

#define INBOX_CHUNK 65536
#define INBOX_KEEP (1 << 20)

void lmp__inbox_alloc(lmp_inbox *in, uv_buf_t *buf) {
  size_t want = INBOX_CHUNK, pending = in->bytes.len - in->used;
  if (pending >= LMP_FRAME_HEADER) {
    uint64_t frame = lmp__frame_length(in->bytes.data + in->used);
    if (frame + LMP_FRAME_HEADER > pending && frame <= LMP_FRAME_MAX)
      want = (size_t)(frame + LMP_FRAME_HEADER - pending);
    if (want < INBOX_CHUNK) want = INBOX_CHUNK;
  }
  if (lmp__buffer_reserve(&in->bytes, want) != 0) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  buf->base = in->bytes.data + in->bytes.len;
  buf->len = in->bytes.cap - in->bytes.len;
}

int lmp__inbox_next(lmp_inbox *in, const char **body, size_t *n) {
  size_t pending = in->bytes.len - in->used;
  uint64_t frame;
  if (pending < LMP_FRAME_HEADER) return 0;
  if (!lmp__frame_header_valid(in->bytes.data + in->used)) return -1;
  frame = lmp__frame_length(in->bytes.data + in->used);
  if (frame > pending - LMP_FRAME_HEADER) return 0;
  *body = in->bytes.data + in->used + LMP_FRAME_HEADER;
  *n = (size_t)frame;
  in->used += LMP_FRAME_HEADER + (size_t)frame;
  return 1;
}

void lmp__inbox_compact(lmp_inbox *in) {
  if (in->used == in->bytes.len) {
    in->bytes.len = in->used = 0;
    if (in->bytes.cap > INBOX_KEEP) lmp__buffer_free(&in->bytes);
  } else if (in->used > 0) {
    memmove(in->bytes.data, in->bytes.data + in->used, in->bytes.len - in->used);
    in->bytes.len -= in->used;
    in->used = 0;
  }
}

int lmp__inbox_frames(lmp_inbox *in, void (*deliver)(void *ctx, const char *body, size_t n),
                      void *ctx) {
  const char *body;
  size_t n;
  int r;
  while ((r = lmp__inbox_next(in, &body, &n)) > 0) deliver(ctx, body, n);
  lmp__inbox_compact(in);
  return r;
}

void lmp__inbox_free(lmp_inbox *in) {
  lmp__buffer_free(&in->bytes);
  in->used = 0;
}

size_t lmp__frame_message(lua_State *L, const char *body, size_t n) {
  uint32_t message = n >= 4 ? lmp__u32_at(body) : 0;
  if (n < 4 || message > n - 4) luaL_error(L, "lmp: malformed frame on the channel");
  return message;
}
