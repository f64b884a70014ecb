#!/usr/bin/python3
"""Serving a model keeps peak RSS within weights + KV pool + 15%.

Usage: check_serving_memory.py RECGPT_BINARY MODEL_DIR
Runs `recgpt generate` on the model and reads the memory line it prints (peak RSS from getrusage, the
weight bytes and the KV pool bytes). Exits 1 when peak RSS exceeds 1.15 x (weights + KV pool).
"""
import json
import re
import subprocess
import sys

LIMIT = 1.15


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    recgpt, model_dir = sys.argv[1:]
    result = subprocess.run([recgpt, "generate", "--model", model_dir, "--prompt", "A user who likes tea " * 40,
                             "--max-tokens", "8", "--kv-cache-mib", "256"],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        print(f"FAIL: recgpt generate exited {result.returncode}: {result.stderr.strip()[:500]}")
        return 1
    match = re.search(r"recgpt: memory (\{.*\})", result.stderr)
    if not match:
        print(f"FAIL: no memory line in: {result.stderr.strip()[:500]}")
        return 1
    memory = json.loads(match.group(1))
    ratio = memory["peak_rss_over_weights_plus_kv"]
    ok = ratio <= LIMIT
    print(f"{'PASS' if ok else 'FAIL'}: peak RSS {memory['peak_rss_bytes'] / 2**20:.0f} MiB = {ratio:.3f} x "
          f"(weights {memory['weight_bytes'] / 2**20:.0f} MiB + KV pool {memory['kv_pool_bytes'] / 2**20:.0f} MiB); "
          f"limit {LIMIT}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
