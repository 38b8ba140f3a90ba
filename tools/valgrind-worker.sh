#!/bin/sh
# A worker under valgrind, for `make valgrind`: LMP_WORKER points here. Each
# worker writes its own log; the Makefile fails the run if any shows an
# error or a definite leak.
exec valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
  --log-file="${LMP_VALGRIND_LOGS:-/tmp}/worker.%p.log" \
  "${LMP_VALGRIND_WORKER:-build/bin/lmp-worker}" "$@"
