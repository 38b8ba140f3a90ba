#!/bin/sh
# The MPI benchmark: lmp over MPI ranks beside a local pool of the same
# size (tests/bench/mpi.lua), over Open MPI's shared-memory transport
# (vader) and over TCP, and mpi4py.futures the same (tests/bench/mpi4py_bench.py)
# where python3-mpi4py is installed, side by side in one run. Needs an MPI
# build (make MPI=1 BUILD=build-mpi); prints and exits 0 otherwise.
# Usage: tests/bench/mpi_bench.sh [mpi-build-dir] [ranks]
BUILD=${1:-build-mpi}
RANKS=${2:-4}
cd "$(dirname "$0")/../.." || exit 1
if [ ! -x "$BUILD/bin/lmp" ] || ! command -v mpiexec >/dev/null; then
  echo "mpi bench: skipped (no MPI build in $BUILD or no mpiexec)"
  exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
RUN="mpiexec -n $RANKS --oversubscribe"
echo "== lmp, shared memory (btl vader,self)"
$RUN --mca btl vader,self "$BUILD/bin/lmp" tests/bench/mpi.lua
echo "== lmp, TCP (btl tcp,self)"
$RUN --mca btl tcp,self "$BUILD/bin/lmp" tests/bench/mpi.lua
PY=/usr/bin/python3
if $PY -c "import mpi4py" 2>/dev/null; then
  echo "== mpi4py.futures, shared memory (btl vader,self)"
  $RUN --mca btl vader,self $PY -m mpi4py.futures tests/bench/mpi4py_bench.py
  echo "== mpi4py.futures, TCP (btl tcp,self)"
  $RUN --mca btl tcp,self $PY -m mpi4py.futures tests/bench/mpi4py_bench.py
else
  echo "mpi4py.futures: skipped (python3-mpi4py is not installed)"
fi
exit 0
