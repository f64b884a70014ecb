#!/usr/bin/env bash
# Runs on the GPU machine (the device tool) from the repository root, with build/gpu-bundle carried there
# (scripts/gpu_bundle.sh): the CUDA backend's kernel and model tests, its logits against Hugging Face
# transformers and the CPU backend, the GPU tests of kv_transfer and the cluster, and the speed against the HBM
# copy bandwidth and transformers' generate. Full output in $OUT/gpu_check.txt; figures also in
# $OUT/hf_compare.json, $OUT/cuda_bench.json and $OUT/hf_bench.json.
#   run: bash scripts/gpu_check.sh [STEP...]      carry: ["build/gpu-bundle"]
# STEPs, in the order they run (default: all but the sanitizers): unit hf integration bench hfbench sanitize
# racecheck.
# GPU_CHECK_C_LIBRARY=bundled runs our programs under the bundle's C library even where the machine's would do.
# The whole run keeps within GPU_CHECK_SECONDS (default 540) so that the device call returns what it found; each
# step gets its own cap, or what is left. A failing step does not stop the others.
set -uo pipefail
out=${OUT:-/tmp}
steps=${*:-unit hf integration bench hfbench}
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
bundle=/tmp/recgpt-gpu-bundle
rm -rf "$bundle" && mkdir -p "$bundle/run" && tar -C "$bundle" -xJf build/gpu-bundle/bundle.tar.xz

# CUDA's libraries where this machine has them: its toolkit, or the Python packages PyTorch brought.
cuda_dirs=$(find -L /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
  "$(python3 -c 'import site; print(site.getsitepackages()[0])')/nvidia" \
  \( -name 'libcublas.so.13*' -o -name 'libcudart.so.13*' -o -name 'libnccl.so.2*' \) 2>/dev/null |
  xargs -r -n1 dirname | sort -u | paste -sd:)

# Our programs run through wrappers in $bundle/run with the bundle's libraries (Python runs without them: its
# PyTorch needs the machine's newer libstdc++). Where this machine's C library is older than the one they were
# built against, they run under the bundle's own (its loader, named explicitly).
write_wrappers() {  # $1: "system" or "bundled" C library
  local name launch
  for program in "$bundle"/bin/*; do
    name=$(basename "$program")
    if [ "$1" = bundled ]; then
      launch="$bundle/lib/glibc/ld-linux-x86-64.so.2 --library-path $bundle/lib/glibc:$bundle/lib:$cuda_dirs $program"
    else
      launch="env LD_LIBRARY_PATH=$bundle/lib:$cuda_dirs $program"
    fi
    printf '#!/bin/sh\nexport UCX_MODULE_DIR=%s RECGPT=%s KV_TRANSFER_PEER=%s\nexec %s "$@"\n' \
      "$bundle/lib/ucx" "$bundle/run/recgpt" "$bundle/run/kv_transfer_peer" "$launch" >"$bundle/run/$name"
    chmod +x "$bundle/run/$name"
  done
}
write_wrappers system
if [ "${GPU_CHECK_C_LIBRARY:-}" = bundled ] || ! "$bundle/run/recgpt" --help >/dev/null 2>"$bundle/start_error.txt"; then
  write_wrappers bundled
fi
run=$bundle/run

# step NAME CAP_SECONDS FUNCTION: runs FUNCTION when NAME was asked for, within its cap and the whole deadline;
# its whole output goes to $OUT/NAME.txt (kept when it is killed), its last lines to this log.
step() {
  local name=$1 cap=$2 function=$3
  case " $steps " in *" $name "*) ;; *) return 0 ;; esac
  local left=$((deadline - SECONDS))
  ((left < cap)) && cap=$left
  if ((cap < 10)); then
    echo "== $name: skipped, the run's time is spent"
    return 0
  fi
  echo "== $name (at most ${cap}s)"
  local started=$SECONDS
  timeout --kill-after=5 "$cap" bash -c "set -o pipefail; $function" >"$out/$name.txt" 2>&1
  local status=$?
  tail -n 120 "$out/$name.txt"
  echo "== $name exit: $status$( ((status == 124)) && echo ' (timed out)') after $((SECONDS - started))s"
}

# each_case PROGRAM SPEC: every test case SPEC matches, each in its own process, so that a crash or a sticky CUDA
# error costs one case, not the rest. A ',' in a name would split the filter: it is escaped.
each_case() {
  local program=$1 spec=$2 name failed=0
  while IFS= read -r name; do
    [ -n "$name" ] || continue
    echo "-- $name"
    "$program" "${name//,/\\,}" --reporter compact --durations yes || failed=1
  done < <("$program" "$spec" --list-test-names-only)
  return $failed
}
cuda_unit_tests() {
  each_case "$run/recgpt_unit_tests" "[cuda]"
  local simt=$?
  echo "== the backend's tests again with SIMT prompt attention (the default is tensor cores)"
  RECGPT_CUDA_PROMPT_ATTENTION=simt each_case "$run/recgpt_unit_tests" "[cuda]~CUDA*"
  return $((simt || $?))
}
hf_compare() {
  PYTHONUNBUFFERED=1 python3 scripts/gpu_compare_hf.py --recgpt "$run/recgpt" --work /tmp/recgpt-hf \
    --json "$out/hf_compare.json"
}
gpu_integration_tests() { each_case "$run/recgpt_integration_tests" "[gpu]"; }
cuda_bench() {
  [ -d /tmp/recgpt-hf/qwen3-0.6b-bf16 ] ||
    "$run/recgpt" make-model --preset qwen3-0.6b --seed 5 --dtype bf16 --out /tmp/recgpt-hf/qwen3-0.6b-bf16
  "$run/recgpt_cuda_bench" /tmp/recgpt-hf/qwen3-0.6b-bf16 512 64 | tee "$out/cuda_bench.json"
}
hf_bench() {
  PYTHONUNBUFFERED=1 python3 scripts/gpu_bench_hf.py --model /tmp/recgpt-hf/qwen3-0.6b-bf16 --context 512 \
    --steps 64 | tee "$out/hf_bench.json"
}
# under_sanitizer TOOL [OPTION...]: the small cases that run on the GPU, each in its own process (a sticky CUDA
# error costs one case), under compute-sanitizer's TOOL (the sanitizer slows kernels 10-100x). The filter leaves out
# the backend's long-context case and the attention kernel's own case (~15 s bare; its name says "long contexts"
# too); the attention kernels still run, through the backend's cases. A case with no CUDA call would fail the
# sanitizer ("terminated before first instrumented API call"): [gpu] leaves those out.
under_sanitizer() {
  local tool=$1 name failed=0
  shift
  while IFS= read -r name; do
    [ -n "$name" ] || continue
    echo "-- $tool: $name"
    compute-sanitizer --tool "$tool" "$@" "$run/recgpt_unit_tests" "${name//,/\\,}" --reporter compact || failed=1
  done < <("$run/recgpt_unit_tests" "[cuda][gpu]~*long context*" --list-test-names-only)
  return $failed
}
# Out-of-bounds and misaligned accesses, and device memory leaked.
sanitize() { under_sanitizer memcheck --leak-check full --error-exitcode 3; }
# Shared-memory races (the decode kernel's cp.async ring, the split combine, the tensor-core tiles), then barrier
# misuse. Racecheck also reports hazards inside cuBLAS's own Hopper GEMMs (nvjet_*, which order their shared
# memory through mbarriers and the tensor memory accelerator, outside its model): only a hazard in a kernel of
# ours fails the step.
racecheck() {
  local report=/tmp/recgpt-racecheck.txt status=0
  under_sanitizer racecheck >"$report" 2>&1 || status=1
  cat "$report"
  if grep -E '(Error|Warning): .* at ' "$report" | grep -v nvjet_; then
    echo "racecheck: hazards in our kernels (above)"
    status=1
  fi
  under_sanitizer synccheck --error-exitcode 3
  return $((status || $?))
}
export out run
export -f each_case cuda_unit_tests hf_compare gpu_integration_tests cuda_bench hf_bench under_sanitizer sanitize \
  racecheck

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  grep -m1 'model name' /proc/cpuinfo
  echo "C library here: $(ldd --version | head -1); our programs run with the $(grep -q glibc/ld-linux "$run/recgpt" &&
    echo "bundle's" || echo "machine's")"
  [ -s "$bundle/start_error.txt" ] && echo "with the machine's they failed: $(head -c 400 "$bundle/start_error.txt")"
  echo "CUDA libraries: $cuda_dirs"
  echo "steps: $steps"
  step unit 150 cuda_unit_tests
  step hf 180 hf_compare
  step integration 120 gpu_integration_tests
  step bench 90 cuda_bench
  step hfbench 60 hf_bench
  step sanitize 200 sanitize
  step racecheck 240 racecheck
  echo "== done after ${SECONDS}s"
} 2>&1 | tee "$out/gpu_check.txt" | tail -150
