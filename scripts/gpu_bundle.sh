#!/usr/bin/env bash
# Builds the tests that need a GPU and bundles them with the shared libraries the GPU machine lacks, into
# build/gpu-bundle (a few MiB: carry it to the device tool's machine, then run scripts/gpu_check.sh there).
# NCCL (218 MB) is not bundled: the GPU machine's Python has it (nvidia-nccl-cu13). Run here, after
# scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset ci -DRECGPT_NCCL=ON >/dev/null
cmake --build --preset ci --target recgpt_integration_tests kv_transfer_peer
bundle=build/gpu-bundle
rm -rf "$bundle" && mkdir -p "$bundle/bin" "$bundle/lib"
cp build/ci/tests/integration/recgpt_integration_tests build/ci/tests/integration/kv_transfer_peer "$bundle/bin/"
strip "$bundle"/bin/*
# Every library the programs load, but glibc's (the GPU machine's is newer) and NCCL's.
for program in "$bundle"/bin/*; do ldd "$program"; done | awk '/=> \// {print $3}' | sort -u |
  grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libnccl)\.so' | xargs -I{} cp -L {} "$bundle/lib/"
cp -rL /usr/lib/x86_64-linux-gnu/ucx "$bundle/lib/ucx"  # UCX's transports, loaded at run time
du -sh "$bundle"
