#!/usr/bin/env bash
# Sets up and runs the whole test suite on a fresh Debian 12 machine (as root). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset ci
cmake --build --preset ci
ctest --preset ci
