#!/usr/bin/env bash
# Runs on the GPU machine (the device tool) from the repository root, with build/gpu-bundle carried there
# (scripts/gpu_bundle.sh): the CUDA backend's kernel and model tests, its logits against Hugging Face
# transformers and the CPU backend, its speed against the HBM copy bandwidth and transformers' generate, and the
# GPU tests of kv_transfer. Full output in $OUT/gpu_check.txt; figures also in $OUT/hf_compare.json,
# $OUT/cuda_bench.json and $OUT/hf_bench.json.
#   run: bash scripts/gpu_check.sh      carry: ["build/gpu-bundle"]
set -uo pipefail
out=${OUT:-/tmp}
bundle=/tmp/recgpt-gpu-bundle
rm -rf "$bundle" && mkdir -p "$bundle" && tar -C "$bundle" -xJf build/gpu-bundle/bundle.tar.xz
# CUDA's libraries where this machine has them: its toolkit, or the Python packages PyTorch brought.
cuda_dirs=$(find -L /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
  "$(python3 -c 'import site; print(site.getsitepackages()[0])')/nvidia" \
  \( -name 'libcublas.so.13*' -o -name 'libcudart.so.13*' -o -name 'libnccl.so.2*' \) 2>/dev/null |
  xargs -r -n1 dirname | sort -u | paste -sd:)
# Our programs run with the bundle's libraries; Python must not (its PyTorch needs the machine's newer libstdc++).
with_libs=$bundle/with-libs
cat >"$with_libs" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH=$bundle/lib:$cuda_dirs UCX_MODULE_DIR=$bundle/lib/ucx KV_TRANSFER_PEER=$bundle/bin/kv_transfer_peer exec "\$@"
WRAPPER
chmod +x "$with_libs"
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "CUDA libraries: $cuda_dirs"
  "$with_libs" ldd "$bundle/bin/recgpt" | grep -E 'not found|cudart'
  echo "== CUDA kernels and backend against the CPU backend"
  timeout 300 "$with_libs" "$bundle/bin/recgpt_unit_tests" "[cuda]" --reporter compact 2>&1 | tail -400
  echo "cuda unit tests exit: ${PIPESTATUS[0]}"
  echo "== logits against Hugging Face transformers"
  PYTHONUNBUFFERED=1 timeout 300 python3 scripts/gpu_compare_hf.py --recgpt "$with_libs $bundle/bin/recgpt" \
    --work /tmp/recgpt-hf --json "$out/hf_compare.json"
  echo "hf comparison exit: $?"
  echo "== speed: HBM copy, decode attention, decode steps (ours, then transformers on the same folder)"
  timeout 240 "$with_libs" "$bundle/bin/recgpt_cuda_bench" /tmp/recgpt-hf/qwen3-0.6b-bf16 512 64 | tee "$out/cuda_bench.json"
  echo "cuda bench exit: ${PIPESTATUS[0]}"
  PYTHONUNBUFFERED=1 timeout 240 python3 scripts/gpu_bench_hf.py --model /tmp/recgpt-hf/qwen3-0.6b-bf16 \
    --context 512 --steps 64 | tee "$out/hf_bench.json"
  echo "== kv_transfer on device memory"
  timeout 240 "$with_libs" "$bundle/bin/recgpt_integration_tests" "[gpu]" -s --reporter compact 2>&1 | tail -100
  echo "gpu integration tests exit: ${PIPESTATUS[0]}"
} 2>&1 | tee "$out/gpu_check.txt" | tail -150
