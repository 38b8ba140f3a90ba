/* The floor for one round trip between two processes: a parent writes a
 * small message to a child, which reads it and writes it back, over plain
 * blocking pipes (and, for comparison, over a socket pair, which is what
 * libuv gives lmp's workers as their channel), and over shared memory
 * with a futex wake-up each way and no spinning (the cost of a wake-up
 * alone: the floor of a shared-memory channel). Nothing in lmp can be
 * faster than these; pool:apply is measured against them.
 *
 * Usage: pingpong [round-trips [message-bytes]]
 * Prints "pingpong.pipe_us X", "pingpong.socketpair_us X" and
 * "pingpong.futex_us X": the median of the round trips, in microseconds,
 * after a warm-up. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int read_full(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t r = write(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Runs `trips` round trips over to_child/from_child (parent's ends) with a
 * child that echoes on its ends; returns the median in microseconds. */
static double run(int parent_out, int parent_in, int child_in, int child_out,
                  int trips, size_t size) {
  char *msg = calloc(1, size);
  double *times = malloc(sizeof *times * (size_t)trips);
  int warmup = trips / 10 + 10, i, status;
  double median;
  pid_t pid = fork();
  if (pid == 0) {
    close(parent_out);
    if (parent_in != parent_out) close(parent_in);
    while (read_full(child_in, msg, size) == 0 && write_full(child_out, msg, size) == 0) {
    }
    _exit(0);
  }
  close(child_in);
  if (child_out != child_in) close(child_out);
  for (i = -warmup; i < trips; i++) {
    double start = now_us();
    if (write_full(parent_out, msg, size) != 0 || read_full(parent_in, msg, size) != 0) {
      fprintf(stderr, "pingpong: the child went away\n");
      exit(1);
    }
    if (i >= 0) times[i] = now_us() - start;
  }
  close(parent_out);
  if (parent_in != parent_out) close(parent_in);
  waitpid(pid, &status, 0);
  qsort(times, (size_t)trips, sizeof *times, compare);
  median = times[trips / 2];
  free(times);
  free(msg);
  return median;
}

/* Shared memory: a sequence word each way and the message. A side writes
 * the message, bumps its word and wakes the other, which sleeps in
 * FUTEX_WAIT while the word is what it last saw. */
struct shared_page {
  _Atomic uint32_t down, up;
  char msg[4096];
};

static void futex_wait(_Atomic uint32_t *word, uint32_t seen) {
  while (*word == seen) syscall(SYS_futex, word, FUTEX_WAIT, seen, NULL, NULL, 0);
}

static void futex_post(_Atomic uint32_t *word) {
  (*word)++;
  syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static double run_futex(int trips, size_t size) {
  struct shared_page *page = mmap(NULL, sizeof *page, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  char *msg = calloc(1, size);
  double *times = malloc(sizeof *times * (size_t)trips);
  int warmup = trips / 10 + 10, i, status;
  double median;
  pid_t pid;
  if (page == MAP_FAILED || size > sizeof page->msg) {
    fprintf(stderr, "pingpong: no shared page for that size\n");
    exit(1);
  }
  pid = fork();
  if (pid == 0) {
    uint32_t seen = 0;
    for (i = -warmup; i < trips; i++) {
      futex_wait(&page->down, seen);
      seen = page->down;
      memcpy(msg, page->msg, size);
      memcpy(page->msg, msg, size);
      futex_post(&page->up);
    }
    _exit(0);
  }
  for (i = -warmup; i < trips; i++) {
    uint32_t seen = page->up;
    double start = now_us();
    memcpy(page->msg, msg, size);
    futex_post(&page->down);
    futex_wait(&page->up, seen);
    memcpy(msg, page->msg, size);
    if (i >= 0) times[i] = now_us() - start;
  }
  waitpid(pid, &status, 0);
  qsort(times, (size_t)trips, sizeof *times, compare);
  median = times[trips / 2];
  free(times);
  free(msg);
  munmap(page, sizeof *page);
  return median;
}

int main(int argc, char **argv) {
  int trips = argc > 1 ? atoi(argv[1]) : 2000;
  size_t size = argc > 2 ? (size_t)atoi(argv[2]) : 64;
  int down[2], up[2], pair[2];
  if (trips < 1 || size < 1) {
    fprintf(stderr, "usage: pingpong [round-trips [message-bytes]]\n");
    return 2;
  }
  if (pipe(down) != 0 || pipe(up) != 0) {
    perror("pipe");
    return 1;
  }
  printf("pingpong.pipe_us %.3f\n", run(down[1], up[0], down[0], up[1], trips, size));
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) {
    perror("socketpair");
    return 1;
  }
  printf("pingpong.socketpair_us %.3f\n", run(pair[0], pair[0], pair[1], pair[1], trips, size));
  printf("pingpong.futex_us %.3f\n", run_futex(trips, size));
  return 0;
}
