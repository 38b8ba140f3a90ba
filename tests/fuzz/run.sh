#!/bin/sh
# Fuzzes the value decoder: builds tests/fuzz/fuzz_loads.c with libFuzzer,
# ASan and UBSan into build-fuzz/, then runs it for [seconds] (default 60)
# on a copy of tests/fuzz/corpus in tests/fuzz/corpus-work/ (git-ignored,
# kept between runs so coverage accumulates). A crash leaves its input in
# build-fuzz/ as crash-*, leak-* or oom-*; add it to the corpus as
# tests/fuzz/corpus/malformed-found-<what>.bin once decode.c is fixed.
# Usage: tests/fuzz/run.sh [seconds]    (make fuzz FUZZ_SECONDS=600)
set -e
SECONDS_TO_RUN=${1:-60}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CLANG=${CLANG:-clang-14}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
OUT=build-fuzz
mkdir -p "$OUT" tests/fuzz/corpus-work
cp tests/fuzz/corpus/* tests/fuzz/corpus-work/
# shellcheck disable=SC2046
$CLANG -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  $($PKG_CONFIG --cflags lua5.4 libuv) -Iruntime \
  tests/fuzz/fuzz_loads.c runtime/encode.c runtime/numbers.c runtime/decode.c runtime/names.c runtime/error.c runtime/buffer.c runtime/memory.c \
  $($PKG_CONFIG --libs lua5.4) -lm -o "$OUT/fuzz_loads"
# One job (-jobs would take every core). A single allocation over 64 MB is
# a finding: inputs are at most 64 KB, and the decoder allocates no more
# than a small multiple of what it reads.
"$OUT/fuzz_loads" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 \
  -malloc_limit_mb=64 -rss_limit_mb=2048 -dict=tests/fuzz/loads.dict \
  -artifact_prefix="$OUT/" -print_final_stats=1 tests/fuzz/corpus-work
