#!/usr/bin/env bash
# Builds the programs the GPU checks run and bundles them with the shared libraries the GPU machine lacks, into
# build/gpu-bundle/bundle.tar.xz (~30 MiB: carry build/gpu-bundle to the device tool's machine, then run
# scripts/gpu_check.sh there). CUDA's own libraries (cudart, cuBLAS, NCCL) are left out: the GPU machine has them
# (its CUDA toolkit and Python packages). Run here, after scripts/install-deps.sh; nvcc must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset ci -DRECGPT_NCCL=ON -DRECGPT_CUDA=ON >/dev/null
cmake --build --preset ci --target recgpt recgpt_unit_tests recgpt_integration_tests kv_transfer_peer recgpt_cuda_bench
staging=build/gpu-bundle/staging
rm -rf build/gpu-bundle && mkdir -p "$staging/bin" "$staging/lib"
cp build/ci/recgpt build/ci/recgpt_cuda_bench build/ci/tests/recgpt_unit_tests \
  build/ci/tests/integration/recgpt_integration_tests build/ci/tests/integration/kv_transfer_peer "$staging/bin/"
strip "$staging"/bin/*
# Every library the programs load, but the C library's (below) and CUDA's.
for program in "$staging"/bin/*; do ldd "$program"; done | awk '/=> \// {print $3}' | sort -u |
  grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libnccl|libcublas|libcublasLt|libcudart)\.so' |
  xargs -I{} cp -L {} "$staging/lib/"
cp -rL /usr/lib/x86_64-linux-gnu/ucx "$staging/lib/ucx"  # UCX's transports, loaded at run time
# This machine's C library and its loader, for a GPU machine whose own is older than the one we built against
# (scripts/gpu_check.sh falls back to them).
mkdir "$staging/lib/glibc"
for library in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libresolv.so.2 \
  libnss_files.so.2 libnss_dns.so.2; do
  cp -L "/lib/x86_64-linux-gnu/$library" "$staging/lib/glibc/"
done
tar -C "$staging" -cJf build/gpu-bundle/bundle.tar.xz bin lib
rm -rf "$staging"
du -sh build/gpu-bundle/bundle.tar.xz
