#!/usr/bin/env bash
# Runs on the GPU machine (the device tool) from the repository root, with build/gpu-bundle carried there
# (scripts/gpu_bundle.sh): the GPU tests of kv_transfer, output kept in $OUT/gpu_check.txt.
#   run: bash scripts/gpu_check.sh      carry: ["build/gpu-bundle"]
set -uo pipefail
bundle=$PWD/build/gpu-bundle
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))')
export LD_LIBRARY_PATH=$bundle/lib:$nccl_lib:${LD_LIBRARY_PATH:-}
export UCX_MODULE_DIR=$bundle/lib/ucx
export KV_TRANSFER_PEER=$bundle/bin/kv_transfer_peer
out=${OUT:-/tmp}/gpu_check.txt
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; ls "$nccl_lib"
  timeout 240 "$bundle/bin/recgpt_integration_tests" "[gpu]" -s
  echo "gpu integration tests exit: $?"
} 2>&1 | tee "$out" | tail -60
