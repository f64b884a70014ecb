#!/usr/bin/python3
"""`recgpt plan` end to end: its model arithmetic against the checkpoint, its plan against its own objectives,
and bad input refused with a named error.

Usage: check_plan.py RECGPT_BINARY WORK_DIR PLAN_MODEL_DIR [MODEL_DIR...]
- For each model folder, the parameter count the planner prices (`--json`: model.parameters) equals the element
  count of every tensor in its safetensors files, read here from their headers.
- A plan for the first model (one big enough that the load needs several nodes, e.g. the qwen3-0.6b preset):
  every pool it calls feasible meets the objectives it was given, its figures are self-consistent, and
  simulating the planned disaggregated pools again (`--prefill-nodes/--decode-nodes`) meets them while one
  decode node fewer does not, when there is one to take away.
- Bad flags, hardware files and model folders exit with a status code (10..30) and `recgpt: error: <code>: ...`
  naming the culprit, never a crash or a hang.
"""
import json
import os
import struct
import subprocess
import sys

DEADLINE_SECONDS = 300


def run(binary, *args):
    result = subprocess.run([binary, "plan", *args], capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    return result.returncode, result.stdout, result.stderr


def tensor_elements(model_dir):
    total = 0
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, tensor in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in tensor["shape"]:
                count *= dim
            total += count
    return total


def check(condition, message):
    if not condition:
        raise SystemExit("FAILED: " + message)


def check_parameters(binary, model_dir):
    code, out, err = run(binary, "--model", model_dir, "--rate", "0.5", "--duration", "20", "--max-nodes", "2",
                         "--json", "--hardware", "h100")
    check(code == 0, f"plan on {model_dir} failed: {err}")
    planned = json.loads(out)["model"]["parameters"]
    expected = tensor_elements(model_dir)
    check(planned == expected, f"{model_dir}: the planner prices {planned} parameters, the checkpoint holds {expected}")
    print(f"{os.path.basename(model_dir)}: {planned} parameters, as in its safetensors")


def meets(pool, objectives):
    return (pool["ttft_seconds"]["p99"] <= objectives["ttft_p99_seconds"]
            and pool["itl_seconds"]["p99"] <= objectives["itl_p99_seconds"])


def check_plan(binary, model_dir):
    flags = ["--model", model_dir, "--rate", "20", "--hardware", "h100", "--duration", "40"]
    code, out, err = run(binary, *flags, "--json")
    check(code == 0, f"plan failed: {err}")
    plan = json.loads(out)
    objectives = plan["objectives"]
    check(plan["calls_per_workflow"] == 5, "intent's default is a planner, three experts and an arbiter")
    for name in ("disaggregated", "colocated", "baseline"):
        pool = plan[name]
        check(pool["feasible"], f"{name}: no pool found: {pool['missed']}")
        check(meets(pool, objectives), f"{name}: called feasible but misses the objectives: {pool}")
        check(pool["workflows_measured"] > 0, f"{name}: measured no workflow")
        check(pool["prefill_tokens_per_workflow"] <= pool["prompt_tokens_per_workflow"], f"{name}: computes more "
              "prompt tokens than the calls carry")
    disaggregated = plan["disaggregated"]
    check(disaggregated["kv_bytes_per_workflow"] > 0, "a disaggregated pool moves KV")
    check(plan["colocated"]["kv_bytes_per_workflow"] == 0, "a colocated pool moves none")
    # The shared context is computed about once per workflow; the baseline computes every call's own.
    check(disaggregated["prefill_tokens_per_workflow"] < plan["baseline"]["prefill_tokens_per_workflow"] / 4,
          "sharing the context saves most of the prompt computation")
    pools = ["--prefill-nodes", str(disaggregated["prefill_nodes"]), "--max-step-tokens",
             str(disaggregated["step_tokens"])]
    code, out, err = run(binary, *flags, *pools, "--decode-nodes", str(disaggregated["decode_nodes"]), "--json")
    check(code == 0, f"evaluate failed: {err}")
    check(json.loads(out)["feasible"], "the planned pools, simulated again, miss the objectives")
    if disaggregated["decode_nodes"] > 1:
        code, out, err = run(binary, *flags, *pools, "--decode-nodes", str(disaggregated["decode_nodes"] - 1), "--json")
        check(code == 0, f"evaluate failed: {err}")
        check(not json.loads(out)["feasible"], "one decode node fewer than planned still meets the objectives")
    code, out, err = run(binary, *flags)
    check(code == 0 and "fewest nodes:" in out, f"the text report lacks its summary: {out}{err}")
    print(f"plan: {disaggregated['prefill_nodes']}P + {disaggregated['decode_nodes']}D, colocated "
          f"{plan['colocated']['nodes']}, baseline {plan['baseline']['nodes']}")


def check_errors(binary, model_dir, work_dir):
    os.makedirs(work_dir, exist_ok=True)
    typo = os.path.join(work_dir, "typo.json")
    with open(typo, "w") as f:
        json.dump({"memory_bytes": 8e10, "memory_bandwith": 3e12, "peak_flops": 1e15, "kv_link_bandwidth": 5e10}, f)
    small = os.path.join(work_dir, "small.json")
    with open(small, "w") as f:
        json.dump({"memory_bytes": 1e5, "memory_bandwidth": 3e12, "peak_flops": 1e15, "kv_link_bandwidth": 5e10}, f)
    not_json = os.path.join(work_dir, "broken.json")
    with open(not_json, "w") as f:
        f.write("{memory_bytes: ")
    bad_config_dir = os.path.join(work_dir, "bad_config")
    os.makedirs(bad_config_dir, exist_ok=True)
    with open(os.path.join(bad_config_dir, "config.json"), "w") as f:
        f.write('{"architectures": ["LlamaForCausalLM"]}')
    base = ["--model", model_dir, "--rate", "1", "--duration", "5"]
    cases = [
        (base + ["--hardware", typo], "invalid_argument", "unknown field 'memory_bandwith'"),
        (base + ["--hardware", not_json], "invalid_argument", "expected a JSON object"),
        (base + ["--hardware", "a100"], "not_found", "neither a built-in profile (h100, h200)"),
        (base + ["--decode-hardware", small], "invalid_argument", "leave no room for a KV cache"),
        (base + ["--workflow", "ranking"], "not_found", "no workflow 'ranking' (explain, intent, judge)"),
        (base + ["--output-tokens", "critic=3"], "invalid_argument", "no stage 'critic'"),
        (base + ["--output-tokens", "planner"], "invalid_argument", "expected name=integer, got 'planner'"),
        (base + ["--option", "experts=99"], "invalid_argument", "experts must be from 1 to 8"),
        (base + ["--policy", "random"], "invalid_argument", "unknown policy 'random'"),
        (base + ["--kv-dtype", "int4"], "invalid_argument", "--kv-dtype: unknown dtype 'int4'"),
        (base + ["--prefill-nodes", "2"], "invalid_argument", "give either --colocated-nodes"),
        (base + ["--context-tokens", "16000000", "--colocated-nodes", "1"], "invalid_argument",
         "does not fit a node's pool"),
        (["--model", os.path.join(work_dir, "missing"), "--rate", "1"], "not_found", "config.json"),
        (["--model", bad_config_dir, "--rate", "1"], "unimplemented", "LlamaForCausalLM"),
    ]
    for args, code_name, text in cases:
        code, out, err = run(binary, *args)
        check(10 <= code <= 30, f"{args}: exit code {code} (stderr: {err})")
        check(f"recgpt: error: {code_name}: " in err and text in err, f"{args}: expected {code_name} naming "
              f"'{text}', got: {err}")
    print(f"{len(cases)} kinds of bad input refused by name")


def main():
    binary, work_dir, models = sys.argv[1], sys.argv[2], sys.argv[3:]
    for model_dir in models:
        check_parameters(binary, model_dir)
    check_plan(binary, models[0])
    check_errors(binary, models[0], work_dir)


if __name__ == "__main__":
    main()
