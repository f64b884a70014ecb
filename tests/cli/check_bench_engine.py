#!/usr/bin/python3
"""`recgpt bench engine --json` runs end to end and its figures hang together.

Usage: check_bench_engine.py RECGPT_BINARY MODEL_DIR
Speed is not checked (it lives in docs/benchmarks.md); what is checked: every rate is positive and finite, the
bytes per step cover the model's weights, and each decode fraction is its tokens/s over the roofline computed
from its own bandwidth, for the fresh buffer and for the mapped weights alike; the weights (written by our model
maker) start on cache lines; and the report names its KV cache's element type and block size.
"""
import json
import math
import subprocess
import sys


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9)


def check(report):
    errors = []
    rates = [report["read_bandwidth_bytes_per_second"], report["weights_read_bandwidth_bytes_per_second"],
             report["gemm_flops_per_second"], report["prefill"]["tokens_per_second"]]
    if not all(math.isfinite(r) and r > 0 for r in rates):
        errors.append(f"a limit or rate is not positive and finite: {rates}")
    # The model comes from our writer, whose data section starts on a cache line (all but tiny tensors aligned).
    if report["weight_bytes_cache_line_aligned"] < 0.9 * report["decode_weight_bytes"]:
        errors.append(f"only {report['weight_bytes_cache_line_aligned']} of {report['decode_weight_bytes']} weight "
                      "bytes start on a cache line")
    # The bench keeps KV as the engine serves bf16 models (bf16) and the rest (f32), in blocks of 16 tokens.
    expected_kv = "bf16" if report["weight_dtype"] == "bf16" else "f32"
    if report["kv_dtype"] != expected_kv or report["kv_block_size"] != 16:
        errors.append(f"KV {report['kv_dtype']} in blocks of {report['kv_block_size']} for {report['weight_dtype']} "
                      f"weights, expected {expected_kv} in blocks of 16")
    if report["decode_context_tokens"] != 24:
        errors.append(f"decode_context_tokens {report['decode_context_tokens']} != 24 (--decode-context)")
    if [d["batch_size"] for d in report["decode"]] != [1, 2]:
        errors.append(f"decode batch sizes {[d['batch_size'] for d in report['decode']]} != [1, 2]")
    for d in report["decode"]:
        batch = d["batch_size"]
        if d["bytes_per_step"] < report["weight_bytes"] * 0.5:
            errors.append(f"batch {batch}: {d['bytes_per_step']} bytes per step for {report['weight_bytes']} of weights")
        for bandwidth, fraction in (("read_bandwidth_bytes_per_second", "fraction_of_roofline"),
                                    ("weights_read_bandwidth_bytes_per_second", "fraction_of_weights_roofline")):
            if not (math.isfinite(d[bandwidth]) and d[bandwidth] > 0):
                errors.append(f"batch {batch}: {bandwidth} = {d[bandwidth]}")
                continue
            expected = d["tokens_per_second"] * d["bytes_per_step"] / (batch * d[bandwidth])
            if not close(d[fraction], expected):
                errors.append(f"batch {batch}: {fraction} = {d[fraction]}, expected {expected}")
    return errors


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    recgpt, model_dir = sys.argv[1:]
    result = subprocess.run([recgpt, "bench", "engine", "--model", model_dir, "--prefill-tokens", "16",
                             "--batch-sizes", "1", "2", "--decode-steps", "2", "--decode-context", "24", "--repetitions", "1", "--json"],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        print(f"FAIL: recgpt bench engine exited {result.returncode}: {result.stderr.strip()[:500]}")
        return 1
    try:
        errors = check(json.loads(result.stdout))
    except (ValueError, KeyError, TypeError) as error:
        errors = [f"unreadable report ({error!r}): {result.stdout[:500]}"]
    for error in errors:
        print(f"FAIL: {error}")
    if not errors:
        print("bench engine report consistent")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
