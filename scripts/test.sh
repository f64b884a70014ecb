#!/usr/bin/env bash
# Sets up and runs the whole test suite on a fresh Debian 12 machine (as root). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Where the CUDA toolkit is installed (as on this project's machines, GPU or not) the CUDA host code must build:
# a failed detection then fails CI instead of silently dropping the nccl backend and its tests.
if [ -f /usr/local/cuda/include/nccl.h ]; then
  cmake --preset ci -DRECGPT_NCCL=ON
else
  cmake --preset ci
fi
cmake --build --preset ci
ctest --preset ci
