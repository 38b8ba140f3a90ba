/* Descriptors on a worker's channel (SCM_RIGHTS), the parts both sides
 * share: the descriptors that arrived and that no frame took yet, in the
 * order they came (each frame takes as many as its header announces: they
 * arrive with its first byte, so before the frame is whole); a recvmsg
 * that keeps them; the control data that sends them; and decoding a frame
 * with its own. The worker's side is channel.c's, the main process's
 * process.c's and process_send.c's. Part of the transport layer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "inbox.h"
#include "transport.h"

int lmp__arrivals_keep(lmp_arrivals *a, int fd) {
  if (a->count == a->room) {
    size_t room = a->room ? 2 * a->room : 16;
    int *more = realloc(a->fd, room * sizeof *more);
    if (more == NULL) {
      close(fd);
      return -1;
    }
    a->fd = more;
    a->room = room;
  }
  a->fd[a->count++] = fd;
  return 0;
}

void lmp__arrivals_free(lmp_arrivals *a) {
  size_t i;
  for (i = 0; i < a->count; i++) close(a->fd[i]);
  free(a->fd);
  a->fd = NULL;
  a->count = a->room = 0;
}

/* Keeps the descriptors of a recvmsg's control data. Returns 0, or -1
 * when some were lost (truncated, or no memory). */
static int keep_control(lmp_arrivals *a, struct msghdr *msg) {
  struct cmsghdr *cmsg;
  int lost = (msg->msg_flags & MSG_CTRUNC) != 0;
  for (cmsg = CMSG_FIRSTHDR(msg); cmsg; cmsg = CMSG_NXTHDR(msg, cmsg)) {
    size_t count, i;
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (i = 0; i < count; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof fd, sizeof fd);
      if (lmp__arrivals_keep(a, fd) != 0) lost = 1;
    }
  }
  return lost ? -1 : 0;
}

ssize_t lmp__recv_keeping(lmp_arrivals *a, int fd, char *p, size_t n, int flags) {
  union {
    struct cmsghdr align;
    char bytes[CMSG_SPACE(LMP_FRAME_DESCRIPTORS_MAX * sizeof(int))];
  } control;
  struct iovec iov;
  struct msghdr msg;
  ssize_t r;
  iov.iov_base = p;
  iov.iov_len = n;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.bytes;
  msg.msg_controllen = sizeof control.bytes;
  r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | flags);
  if (r < 0 && errno == ENOTSOCK) return read(fd, p, n);
  if (r >= 0 && msg.msg_controllen > 0 && keep_control(a, &msg) != 0) {
    errno = EPROTO;
    return -1;
  }
  return r;
}

lmp_descriptors *lmp__arrivals_take(lua_State *L, lmp_arrivals *a, int count) {
  lmp_descriptors *d;
  int i;
  if (count == 0) {
    lua_pushnil(L);
    return NULL;
  }
  d = lmp__push_descriptors(L); /* first: raising here leaks nothing */
  for (i = 0; i < count; i++) lmp__descriptors_add(d, a->fd[i]);
  a->count -= (size_t)count;
  memmove(a->fd, a->fd + count, a->count * sizeof *a->fd);
  return d;
}

void lmp__set_descriptors(struct msghdr *msg, char *room, const lmp_descriptors *pass) {
  struct cmsghdr *cmsg;
  size_t size = (size_t)pass->n * sizeof(int);
  memset(room, 0, CMSG_SPACE(size)); /* the padding too: all of it is sent */
  msg->msg_control = room;
  msg->msg_controllen = CMSG_SPACE(size);
  cmsg = CMSG_FIRSTHDR(msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(size);
  memcpy(CMSG_DATA(cmsg), pass->fd, size);
}

void lmp__decode_frame_carrying(lua_State *L, const char *body, size_t n, lmp_arrivals *a) {
  const char *header = body - LMP_FRAME_HEADER;
  int counts[2], boxes = lua_gettop(L) + 1;
  lmp_descriptors *message, *payload, *previous;
  size_t length;
  counts[0] = lmp__frame_message_descriptors(header);
  counts[1] = lmp__frame_payload_descriptors(header);
  if (a->count < (size_t)(counts[0] + counts[1]))
    luaL_error(L, "lmp: a frame announces %d descriptors that did not arrive",
               counts[0] + counts[1]);
  message = lmp__arrivals_take(L, a, counts[0]);
  payload = lmp__arrivals_take(L, a, counts[1]);
  length = lmp__frame_message(L, body, n);
  previous = lmp__descriptors_offer(message);
  lmp__decode(L, body + 4, length);
  lmp__descriptors_offer(payload);
  if (n - 4 - length > 0) lmp__decode(L, body + 4 + length, n - 4 - length);
  else lua_pushnil(L);
  lmp__descriptors_offer(previous);
  /* What no value took is closed now, not when the boxes are collected. */
  if (message) lmp__descriptors_close(message);
  if (payload) lmp__descriptors_close(payload);
  lua_remove(L, boxes);
  lua_remove(L, boxes);
}
