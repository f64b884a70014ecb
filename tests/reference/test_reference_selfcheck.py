#!/usr/bin/python3
"""Checks properties the NumPy Qwen3 reference must have, without the C++ engine.

Run as a plain script: prints one line per check and exits 1 if any fails (77, ctest's skip, without NumPy).
"""

import math
import os
import sys
import tempfile
import traceback

try:
    import numpy as np
except ImportError:
    print("SKIP: NumPy is not available to", sys.executable)
    sys.exit(77)

import make_random_model
from make_random_model import ModelSpec
from qwen3_reference import ACTIVATIONS, Qwen3Reference, apply_rope, rms_norm, rope_cos_sin

SMALL = ModelSpec(seed=11, hidden_size=48, num_heads=4, num_kv_heads=2, head_dim=16, num_layers=2,
                  intermediate_size=64, adaptor="separate", entity_dim=24, adaptor_hidden_dim=32)


def load(work_dir, name, spec):
    path = os.path.join(work_dir, name)
    make_random_model.write_model(path, spec)
    return Qwen3Reference(path)


def assert_close(actual, expected, tolerance, what):
    difference = float(np.max(np.abs(actual - expected)))
    if difference > tolerance:
        raise AssertionError(f"{what}: max difference {difference:.3e} > {tolerance:.1e}")


def check_causal(work_dir):
    """Logits at position t do not change when later tokens change, nor when the prompt stops at t."""
    model = load(work_dir, "causal", SMALL)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 256, 10)
    changed = tokens.copy()
    changed[6:] = rng.integers(0, 256, 4)
    full, other = model.forward(tokens), model.forward(changed)
    assert_close(other[:6], full[:6], 1e-12, "earlier positions after changing later tokens")
    assert_close(model.forward(tokens[:6]), full[:6], 1e-12, "prefix forward against full forward")
    if np.max(np.abs(other[6:] - full[6:])) < 1e-3:
        raise AssertionError("changing tokens did not change their own logits")


def check_rope_relative_position(_work_dir):
    """After RoPE, q . k depends only on the position difference, and RoPE keeps vector norms."""
    rng = np.random.default_rng(2)
    head_dim = 32
    q, k = rng.normal(size=(1, 1, head_dim)), rng.normal(size=(1, 1, head_dim))

    def rotated(x, position):
        cos, sin = rope_cos_sin([position], head_dim, 10000.0)
        return apply_rope(x, cos, sin)[0, 0]

    for offset in (0, 1, 5, 17):
        dots = [rotated(q, m + offset) @ rotated(k, m) for m in (0, 3, 40, 1000)]
        assert_close(np.array(dots), np.full(4, dots[0]), 1e-9, f"q.k at position difference {offset}")
    assert_close(np.linalg.norm(rotated(q, 123)), np.linalg.norm(q), 1e-12, "norm after RoPE")
    if abs(rotated(q, 1) @ rotated(k, 0) - q[0, 0] @ k[0, 0]) < 1e-6:
        raise AssertionError("RoPE did not change q.k at position difference 1")


def rope_one_position(x, position, theta):
    """RoPE of x [heads, head_dim] at one position, as a complex rotation of pairs (x[i], x[i + half])."""
    half = x.shape[-1] // 2
    frequencies = theta ** (-np.arange(half) * 2.0 / x.shape[-1])
    pairs = (x[:, :half] + 1j * x[:, half:]) * np.exp(1j * position * frequencies)
    return np.concatenate([pairs.real, pairs.imag], axis=-1)


def decode_step(model, cache, embedding, position):
    """One token through the model with an explicit per-layer KV cache (lists of [kv_heads, head_dim])."""
    c = model.config
    x = embedding
    for layer, (keys, values) in zip(model.layers, cache):
        h = rms_norm(x, layer.input_norm, c.rms_norm_eps)
        q = rms_norm((layer.q_proj @ h).reshape(c.num_heads, c.head_dim), layer.q_norm, c.rms_norm_eps)
        k = rms_norm((layer.k_proj @ h).reshape(c.num_kv_heads, c.head_dim), layer.k_norm, c.rms_norm_eps)
        keys.append(rope_one_position(k, position, c.rope_theta))
        values.append((layer.v_proj @ h).reshape(c.num_kv_heads, c.head_dim))
        q = rope_one_position(q, position, c.rope_theta)
        heads = []
        for head in range(c.num_heads):
            kv_head = head * c.num_kv_heads // c.num_heads
            scores = np.array([q[head] @ key[kv_head] for key in keys]) / math.sqrt(c.head_dim)
            weights = np.exp(scores - scores.max())
            heads.append(sum(w * value[kv_head] for w, value in zip(weights / weights.sum(), values)))
        x = x + layer.o_proj @ np.concatenate(heads)
        h = rms_norm(x, layer.post_attention_norm, c.rms_norm_eps)
        gate = layer.gate_proj @ h
        x = x + layer.down_proj @ (gate / (1.0 + np.exp(-gate)) * (layer.up_proj @ h))
    return model.lm_head @ rms_norm(x, model.final_norm, c.rms_norm_eps)


def check_kv_cache_decode(work_dir):
    """Token-by-token decoding with a KV cache equals the full forward, entity positions included."""
    spec = ModelSpec(**{**SMALL.__dict__, "num_heads": 6, "num_kv_heads": 2, "num_layers": 3})  # query group of 3
    model = load(work_dir, "kv_cache", spec)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 256, 9)
    tokens[[2, 5]] = model.config.entity_token_id
    entities = rng.normal(size=(2, model.config.adaptor.entity_dim)).astype(np.float32)
    embeddings = model.input_embeddings(tokens, entities)
    cache = [([], []) for _ in model.layers]
    stepwise = np.stack([decode_step(model, cache, embeddings[t], t) for t in range(len(tokens))])
    full = model.forward(tokens, entities)
    assert_close(stepwise, full, 1e-9 * np.max(np.abs(full)), "KV-cache decode against full forward")


def check_entity_equals_token(work_dir):
    """An entity vector whose adaptor output is exactly embedding row x gives the logits of token x.

    Adaptor built to be the identity: fc1 = [I; -I], relu, fc2 = [I, -I] (relu(v) - relu(-v) = v exactly)."""
    spec = ModelSpec(**{**SMALL.__dict__, "entity_dim": SMALL.hidden_size, "adaptor_hidden_dim": 2 * SMALL.hidden_size,
                        "adaptor_activation": "relu"})
    model = load(work_dir, "entity", spec)
    identity = np.eye(spec.hidden_size)
    model.adaptor_weights = {
        "fc1.weight": np.vstack([identity, -identity]), "fc1.bias": np.zeros(2 * spec.hidden_size),
        "fc2.weight": np.hstack([identity, -identity]), "fc2.bias": np.zeros(spec.hidden_size),
    }
    tokens = np.array([5, 77, 120, 9, 200, 33])
    with_entities = tokens.copy()
    with_entities[[1, 4]] = model.config.entity_token_id
    entities = model.embed_tokens[tokens[[1, 4]]]
    assert_close(model.forward(with_entities, entities), model.forward(tokens), 0.0, "entity against token")


def check_storage_layouts(work_dir):
    """Sharded and separate-adaptor folders load the same weights; bf16/f16 differ only by their rounding."""
    base = load(work_dir, "single", SMALL)
    sharded = load(work_dir, "sharded", ModelSpec(**{**SMALL.__dict__, "num_shards": 2, "adaptor": "main"}))
    for name, array in base.tensors.items():
        assert_close(sharded.tensors[name], array, 0.0, f"sharded {name}")
    for dtype, relative_step in (("bf16", 2.0**-8), ("f16", 2.0**-11)):
        rounded = load(work_dir, dtype, ModelSpec(**{**SMALL.__dict__, "dtype": dtype}))
        for name, array in base.tensors.items():
            assert_close(rounded.tensors[name], array, relative_step * np.max(np.abs(array)), f"{dtype} {name}")
    bits = make_random_model.safetensors_io.f32_to_bf16_bits(np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8], np.float32))
    if list(bits) != [0x3F80, 0x3F82]:
        raise AssertionError(f"bf16 rounding is not to nearest even: {[hex(b) for b in bits]}")


def check_activations(_work_dir):
    """Activations against values computed by hand (gelu with exact erf, not the tanh form)."""
    x = np.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    expected = {
        "gelu": 0.5 * x * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x])),
        "gelu_pytorch_tanh": 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        "silu": x / (1 + np.exp(-x)),
        "relu": np.maximum(x, 0),
    }
    for name, values in expected.items():
        assert_close(ACTIVATIONS[name](x), values, 1e-12, name)
    assert_close(ACTIVATIONS["gelu"](np.array([1.0])), np.array([0.8413447460685429]), 1e-12, "gelu(1)")


def main():
    checks = [check_causal, check_rope_relative_position, check_kv_cache_decode, check_entity_equals_token,
              check_storage_layouts, check_activations]
    failures = 0
    with tempfile.TemporaryDirectory() as work_dir:
        for check in checks:
            try:
                check(work_dir)
                print(f"PASS {check.__name__}")
            except Exception:  # report every check, then fail
                failures += 1
                print(f"FAIL {check.__name__}\n{traceback.format_exc()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
