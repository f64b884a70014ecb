#!/usr/bin/python3
"""How well `recgpt plan`'s simulator predicts the real cluster on this machine: the same open-loop load
(`recgpt bench serve`: Poisson arrivals of token-id prompts with a shared prefix) measured on a local cluster and
simulated by `recgpt plan --prefill-nodes 1 --decode-nodes 1` with a hardware profile calibrated in the same run.

1. Calibrate: `recgpt bench engine --threads 1 --json` on the model. The profile's FLOP rate is the measured
   prefill rate (its FLOPs per token times tokens per second, efficiency 1); its step overhead and memory
   bandwidth are fitted to the measured decode step times at batch 1, 8 and 32 (least squares on log time).
2. For each mode (`colocated`: `recgpt serve`, a prefill and a decode engine in one process, KV copied in
   memory; `disaggregated`: two processes, KV over UCX tcp), measure with `recgpt bench serve` (one compute thread
   per engine: on a 2-core machine each engine has a core, as the simulator assumes) at each rate, and simulate
   one prefill and one decode node under the same load, twice:
   - "engine": with the engine's profile alone;
   - "served": with the serving path calibrated at the lowest rate, where nothing queues: the measured ITL's
     p90 / p50 sets the steps' spread (`step_time_sigma`), the measured ITL p50 less the simulated one is added
     to every step (token streaming through the control plane and the router), the measured TTFT p50 less the
     simulated one to every call (`--call-overhead`: HTTP, tokenization, placement, round trips). The higher
     rates then test the simulator's queueing and batching alone.
3. Print predicted against measured TTFT and ITL percentiles (and write them with --json).

  /usr/bin/python3 bench/plan_validation.py --recgpt build/ci/recgpt --model /tmp/small [--rates 1,5,10,15]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

CHAT_WORKFLOW = {
    "name": "chat",
    "description": "One completion: the shape of bench serve's requests.",
    "system": "-",
    "steps": [{"name": "reply", "prompt": "-", "max_tokens": 4096}],
}
# Bytes/s a KV push moves: an in-process copy (colocated) and UCX over tcp on this machine (docs/benchmarks.md).
LINK_BANDWIDTH = {"colocated": 10e9, "disaggregated": 4e9}


def run_json(args):
    result = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def write_profile(work, name, profile):
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        json.dump(profile, f)
    return path


def calibrate(recgpt, model, kv_cache_mib):
    report = run_json([recgpt, "bench", "engine", "--model", model, "--threads", "1", "--json"])
    flops = report["prefill"]["flops_per_token"] * report["prefill"]["tokens_per_second"]
    points = [(d["batch_size"] / d["tokens_per_second"], d["batch_size"] * report["prefill"]["flops_per_token"],
               d["bytes_per_step"]) for d in report["decode"]]
    t1, flops1, bytes1 = points[0]
    best = None
    for i in range(200):
        overhead = t1 * i / 200
        memory_time = t1 - overhead
        if memory_time <= flops1 / flops:
            break
        bandwidth = bytes1 / memory_time
        error = sum(math.log((overhead + max(f / flops, b / bandwidth)) / t) ** 2 for t, f, b in points)
        if best is None or error < best[0]:
            best = (error, overhead, bandwidth)
    _, overhead, bandwidth = best
    profile = {
        "name": "this-machine-1-thread",
        "memory_bytes": report["weight_bytes"] + (kv_cache_mib << 20),
        "memory_reserved_fraction": 0,
        "memory_bandwidth": bandwidth,
        "bandwidth_efficiency": 1,
        "peak_flops": flops,
        "flops_efficiency": 1,
        "step_overhead_seconds": overhead,
        "kv_link_bandwidth": 4e9,
        "kv_link_latency_seconds": 50e-6,
    }
    fit = [(t, overhead + max(f / flops, b / bandwidth)) for t, f, b in points]
    return profile, fit


def measure(recgpt, model, mode, rate, args):
    report = run_json([recgpt, "bench", "serve", "--model", model, "--modes", mode, "--rate", str(rate),
                       "--duration", str(args.duration), "--prompt-len", str(args.prompt_len), "--shared-prefix-len",
                       str(args.shared_prefix_len), "--output-len", str(args.output_len), "--kv-cache-mib",
                       str(args.kv_cache_mib), "--overhead-calls", "0", "--threads", "1", "--seed", "1", "--json"])
    figures = report["modes"][mode]
    if figures["failed"]:
        sys.exit(f"{mode} at {rate}/s: {figures['failed']} requests failed")
    return {"ttft": figures["ttft"], "itl": figures["itl"], "requests": figures["requests"]}


def predict(recgpt, model, profile_path, workflows_dir, rate, args, call_overhead=0.0):
    result = run_json([recgpt, "plan", "--model", model, "--hardware", profile_path, "--workflows", workflows_dir,
                       "--call-overhead", str(call_overhead),
                       "--workflow", "chat", "--system-tokens", str(args.shared_prefix_len), "--context-tokens",
                       str(args.prompt_len - args.shared_prefix_len), "--suffix-tokens", "reply=0",
                       "--output-tokens", f"reply={args.output_len}", "--prefill-nodes", "1", "--decode-nodes", "1",
                       "--rate", str(rate), "--duration", str(max(args.duration, 2000 / rate)), "--max-step-tokens",
                       "4096", "--json"])
    return {"ttft": {f"{k}_s": result["ttft_seconds"][k] for k in ("p50", "p90", "p99")},
            "itl": {f"{k}_s": result["itl_seconds"][k] for k in ("p50", "p90", "p99")}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recgpt", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rates", default="1,5,10,15", help="the first, lowest, also calibrates the serving path")
    parser.add_argument("--modes", default="colocated,disaggregated")
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--shared-prefix-len", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--kv-cache-mib", type=int, default=256)
    parser.add_argument("--json")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="plan_validation_")
    workflows_dir = os.path.join(work, "workflows")
    os.makedirs(workflows_dir)
    with open(os.path.join(workflows_dir, "chat.json"), "w") as f:
        json.dump(CHAT_WORKFLOW, f)
    profile, fit = calibrate(args.recgpt, args.model, args.kv_cache_mib)
    print("calibration (decode step seconds, measured -> fitted): " +
          ", ".join(f"{t * 1e3:.3f} -> {p * 1e3:.3f} ms" for t, p in fit))
    print(f"profile: {profile['peak_flops'] / 1e9:.1f} GFLOP/s, {profile['memory_bandwidth'] / 1e9:.1f} GB/s, "
          f"{profile['step_overhead_seconds'] * 1e3:.3f} ms per step")
    rows = []
    rates = sorted(float(r) for r in args.rates.split(","))
    for mode in args.modes.split(","):
        engine_profile = dict(profile, kv_link_bandwidth=LINK_BANDWIDTH[mode])
        engine_path = write_profile(work, f"{mode}-engine", engine_profile)
        measured = {rate: measure(args.recgpt, args.model, mode, rate, args) for rate in rates}
        low = rates[0]
        engine_low = predict(args.recgpt, args.model, engine_path, workflows_dir, low, args)
        # The spread of equal steps: a log-normal's p90 / p50 is exp(1.2816 sigma); its median is exp(-sigma^2 / 2)
        # of its mean, which the added step time makes up for.
        itl = measured[low]["itl"]
        sigma = max(0.0, math.log(itl["p90_s"] / itl["p50_s"]) / 1.2816)
        step_extra = max(0.0, itl["p50_s"] * math.exp(sigma * sigma / 2) - engine_low["itl"]["p50_s"])
        served_profile = dict(engine_profile, step_overhead_seconds=profile["step_overhead_seconds"] + step_extra,
                              step_time_sigma=min(sigma, 2.0))
        served_path = write_profile(work, f"{mode}-served", served_profile)
        served_low = predict(args.recgpt, args.model, served_path, workflows_dir, low, args)
        call_overhead = max(0.0, measured[low]["ttft"]["p50_s"] - served_low["ttft"]["p50_s"])
        print(f"{mode}: serving path calibrated at {low:g}/s: +{step_extra * 1e3:.3f} ms a step, "
              f"{call_overhead * 1e3:.2f} ms a call, step time sigma {sigma:.3f}")
        for rate in rates:
            rows.append({"mode": mode, "rate": rate, "measured": measured[rate],
                         "engine": predict(args.recgpt, args.model, engine_path, workflows_dir, rate, args),
                         "served": predict(args.recgpt, args.model, served_path, workflows_dir, rate, args,
                                           call_overhead),
                         "step_overhead_added_s": step_extra, "call_overhead_s": call_overhead,
                         "step_time_sigma": sigma})
    print(f"\n{'mode':<14} {'rate':>5}  TTFT p50 / p90 / p99 ms: measured | engine | served"
          f"{'':<16}  ITL p50 / p90 ms: measured | engine | served")
    for row in rows:
        def cells(kind, quantiles):
            return " | ".join("/".join(f"{row[source][kind][q] * 1e3:.1f}" if kind == "ttft" else
                                       f"{row[source][kind][q] * 1e3:.2f}" for q in quantiles)
                              for source in ("measured", "engine", "served"))
        print(f"{row['mode']:<14} {row['rate']:>5g}  {cells('ttft', ('p50_s', 'p90_s', 'p99_s')):<56}"
              f"  {cells('itl', ('p50_s', 'p90_s'))}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": profile, "calibration": fit, "rows": rows, "options": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
