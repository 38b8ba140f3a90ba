#!/bin/sh
# Installs what lmp needs to build and test, from Debian's packages, when it
# is missing; does nothing when everything is there.
set -e
PACKAGES="gcc make pkg-config liblua5.4-dev lua5.4 libuv1-dev lua-busted luarocks lua-luv lua-socket python3 tmux"
# Open MPI, for the MPI transport (make MPI=1), only when asked:
# LMP_SETUP_MPI=1 make setup, or tools/setup.sh mpi. (iproute2: the MPI
# spec's two simulated hosts are network namespaces made with ip.)
if [ -n "$LMP_SETUP_MPI" ] || [ "$1" = mpi ]; then
  PACKAGES="$PACKAGES openmpi-bin libopenmpi-dev iproute2"
fi
# MPICH beside it, only when asked too: LMP_SETUP_MPICH=1 make setup, or
# tools/setup.sh mpich. (Debian installs both side by side: mpicc.mpich,
# mpiexec.mpich; make test then builds and tests lmp against each.)
if [ -n "$LMP_SETUP_MPICH" ] || [ "$1" = mpich ]; then
  PACKAGES="$PACKAGES mpich libmpich-dev"
fi
missing=""
for p in $PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "setup: all packages present"
  exit 0
fi
echo "setup: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
