/* The floor for one round trip between two processes: a parent writes a
 * small message to a child, which reads it and writes it back, over plain
 * blocking pipes (and, for comparison, over a socket pair, which is what
 * libuv gives lmp's workers as their channel). Nothing in lmp can be
 * faster than this; pool:apply is measured against it.
 *
 * Usage: pingpong [round-trips [message-bytes]]
 * Prints "pingpong.pipe_us X" and "pingpong.socketpair_us X": the median
 * of the round trips, in microseconds, after a warm-up. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
  return 0;
}
