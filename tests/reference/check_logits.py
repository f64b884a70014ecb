#!/usr/bin/python3
"""Compares `recgpt logits` with the NumPy Qwen3 reference on random models.

For each case: write a model (make_random_model.py, or `recgpt make-model` for the cpp_* cases), draw token
ids (with entity positions and E.npy when the model has an entity adaptor), run
`recgpt logits --model DIR --tokens ... [--entity-vectors E.npy] --out L.npy`, and compare with the reference:
max|engine - reference| / max|reference| must stay within 1e-4 for f32 weights and 2e-2 for bf16/f16 weights
(the engine may round activations to bf16 for bf16 GEMMs; the reference uses exact weights in float64).

  /usr/bin/python3 check_logits.py --recgpt build/recgpt --work /tmp/logits_work [--cases all|NAME,NAME]

Prints one line per case; exits 0 when all pass, 1 when any fails, 2 on bad usage, 77 without NumPy.
"""

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Optional

try:
    import numpy as np
except ImportError:
    print("SKIP: NumPy is not available to", sys.executable)
    sys.exit(77)

import make_random_model
import safetensors_io
from make_random_model import ModelSpec
from qwen3_reference import Qwen3Reference

F32_TOLERANCE = 1e-4
REDUCED_PRECISION_TOLERANCE = 2e-2
COMMAND_TIMEOUT_S = 120


@dataclass(frozen=True)
class Case:
    name: str
    spec: Optional[ModelSpec] = None          # model written by make_random_model
    make_model_args: tuple = ()               # else: arguments of `recgpt make-model` (besides --out)
    num_tokens: int = 12


_BASE = ModelSpec(hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, num_layers=2, intermediate_size=96)
_ENTITY = replace(_BASE, seed=20, hidden_size=48, head_dim=16, num_layers=2, entity_dim=40, adaptor_hidden_dim=72)

CASES = [
    Case("f32_tied", replace(_BASE, seed=1)),
    # 8 query heads on 2 kv heads; heads * head_dim = 256 != hidden 64; rope_parameters-style config.
    Case("f32_untied_gqa4", replace(_BASE, seed=2, num_heads=8, head_dim=32, num_layers=3, tie_word_embeddings=False,
                                    rope_theta=10000.0, rope_parameters_style=True)),
    Case("bf16_weights", replace(_BASE, seed=3, dtype="bf16", hidden_size=48, tie_word_embeddings=False)),
    Case("f16_weights", replace(_BASE, seed=4, dtype="f16", num_kv_heads=4, head_dim=48)),
    Case("sharded", replace(_BASE, seed=5, num_shards=2, tie_word_embeddings=False, adaptor="main",
                            adaptor_activation="silu")),
    Case("entity_gelu", replace(_ENTITY, seed=6, adaptor="separate", adaptor_activation="gelu")),
    Case("entity_gelu_pytorch_tanh", replace(_ENTITY, seed=7, adaptor="main", adaptor_activation="gelu_pytorch_tanh")),
    Case("entity_silu", replace(_ENTITY, seed=8, adaptor="separate", adaptor_activation="silu")),
    Case("entity_relu", replace(_ENTITY, seed=9, adaptor="main", adaptor_activation="relu")),
    Case("entity_bf16", replace(_ENTITY, seed=10, dtype="bf16", adaptor="separate", adaptor_activation="gelu")),
    Case("long_prompt", replace(_BASE, seed=11, num_layers=3, adaptor="separate"), num_tokens=40),
    Case("cpp_tiny_f32", make_model_args=("--preset", "tiny", "--seed", "3")),
    Case("cpp_tiny_bf16", make_model_args=("--preset", "tiny", "--seed", "3", "--dtype", "bf16")),
]


class CaseFailure(Exception):
    pass


def run_command(command, what):
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CaseFailure(f"{what} did not finish within {COMMAND_TIMEOUT_S} s")
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip() or "(no output)").splitlines()
        if result.returncode > 0:  # an error message; a crash (negative: killed by a signal) keeps its backtrace
            output = output[-3:]
        raise CaseFailure(f"{what} exited with {result.returncode}: {' | '.join(output[-80:])}")


def write_case_model(case, recgpt, model_dir):
    shutil.rmtree(model_dir, ignore_errors=True)
    if case.spec is not None:
        make_random_model.write_model(model_dir, case.spec)
    else:
        run_command([recgpt, "make-model", *case.make_model_args, "--out", model_dir], "recgpt make-model")


def draw_prompt(reference, seed, num_tokens):
    """Token ids (entity positions included when the model has an adaptor) and their entity vectors or None."""
    config = reference.config
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, num_tokens)
    if config.adaptor is None:
        return tokens, None
    tokens[tokens == config.entity_token_id] = 0
    positions = rng.choice(num_tokens, size=max(1, num_tokens // 4), replace=False)
    tokens[positions] = config.entity_token_id
    entities = rng.normal(0.0, 1.0, (len(positions), config.adaptor.entity_dim)).astype(np.float32)
    return tokens, entities


def run_case(case, index, recgpt, work_dir):
    """Returns (ratio, tolerance, max |reference logit|); raises CaseFailure when the case cannot be compared."""
    case_dir = os.path.join(work_dir, case.name)
    model_dir = os.path.join(case_dir, "model")
    write_case_model(case, recgpt, model_dir)
    reference = Qwen3Reference(model_dir)
    tokens, entities = draw_prompt(reference, 1000 + index, case.num_tokens)
    logits_path = os.path.join(case_dir, "logits.npy")
    if os.path.exists(logits_path):
        os.remove(logits_path)
    command = [recgpt, "logits", "--model", model_dir, "--tokens", ",".join(map(str, tokens)), "--out", logits_path]
    if entities is not None:
        entities_path = os.path.join(case_dir, "entities.npy")
        np.save(entities_path, entities)
        command += ["--entity-vectors", entities_path]
    run_command(command, "recgpt logits")

    engine = np.load(logits_path)
    expected = reference.forward(tokens, entities)
    if engine.shape != expected.shape or engine.dtype != np.float32:
        raise CaseFailure(f"recgpt logits wrote {engine.dtype} {engine.shape}, expected float32 {expected.shape}")
    if not np.all(np.isfinite(engine)):
        raise CaseFailure("recgpt logits wrote non-finite values")
    reduced_precision = safetensors_io.stored_dtypes(model_dir) & {"BF16", "F16"}
    tolerance = REDUCED_PRECISION_TOLERANCE if reduced_precision else F32_TOLERANCE
    scale = float(np.max(np.abs(expected)))
    return float(np.max(np.abs(engine - expected))) / scale, tolerance, scale


def select_cases(names):
    if names == "all":
        return CASES
    by_name = {case.name: case for case in CASES}
    unknown = [name for name in names.split(",") if name not in by_name]
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; known: all, {', '.join(by_name)}")
    return [by_name[name] for name in names.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recgpt", required=True, help="path of the recgpt binary")
    parser.add_argument("--work", required=True, help="folder for models and outputs (created)")
    parser.add_argument("--cases", default="all", help="all, or comma-separated case names")
    args = parser.parse_args()
    try:
        cases = select_cases(args.cases)
    except ValueError as error:
        parser.error(str(error))
    if not (os.path.isfile(args.recgpt) and os.access(args.recgpt, os.X_OK)):
        parser.error(f"--recgpt {args.recgpt} is not an executable file")
    recgpt = os.path.abspath(args.recgpt)
    os.makedirs(args.work, exist_ok=True)

    failures = 0
    for case in cases:
        try:
            ratio, tolerance, scale = run_case(case, CASES.index(case), recgpt, args.work)
        except CaseFailure as error:
            failures += 1
            print(f"FAIL {case.name:26s} {error}", flush=True)
            continue
        except Exception as error:  # a broken model or output fails this case, not the whole run
            failures += 1
            print(f"FAIL {case.name:26s} {type(error).__name__}: {error}", flush=True)
            continue
        verdict = "PASS" if ratio <= tolerance else "FAIL"
        failures += verdict == "FAIL"
        print(f"{verdict} {case.name:26s} ratio {ratio:.2e} (tolerance {tolerance:.0e}, max|logit| {scale:.3g})",
              flush=True)
    print(f"{len(cases) - failures} of {len(cases)} cases passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
