#!/usr/bin/python3
"""Independent NumPy reference of Hugging Face's Qwen3ForCausalLM forward pass, plus RecGPT entity tokens.

Written from the structure of transformers' modeling_qwen3.py, never from the C++ engine, so that the engine
can be checked against it. It computes in float64 with the exact on-disk weights (bf16/f16 widened without
rounding); it does not emulate any reduced-precision arithmetic of the engine.

Entity tokens: at the k-th position holding config["entity_token_id"] the input embedding is
fc2(act(fc1(E[k]))) (the adaptor, tensors adaptor.fc{1,2}.{weight,bias}) instead of the vocabulary row.

Usage as a script (mirrors `recgpt logits`):
  /usr/bin/python3 qwen3_reference.py --model DIR --tokens 1,2,3 [--entity-vectors E.npy] --out L.npy
"""

import argparse
import json
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from safetensors_io import read_model_tensors


# ---- activations, by Hugging Face ACT2FN name -------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # equal to 1/(1+exp(-x)) without overflow


ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_pytorch_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x * _sigmoid(x),
    "relu": lambda x: np.maximum(x, 0.0),
}


def activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ---- config ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdaptorConfig:
    entity_dim: int
    hidden_dim: int
    activation: str


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    hidden_act: str
    entity_token_id: Optional[int] = None
    adaptor: Optional[AdaptorConfig] = None


def _rope_theta(config):
    """rope_parameters.rope_theta (newer configs) or rope_theta; only the default (unscaled) RoPE."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    for settings in (parameters, scaling):
        rope_type = settings.get("rope_type", settings.get("type", "default"))
        if rope_type != "default":
            raise NotImplementedError(f"RoPE type {rope_type!r} is not implemented by the reference")
    return float(parameters.get("rope_theta", config.get("rope_theta", 10000.0)))


def config_from_dict(config):
    if config.get("attention_bias", False):
        raise NotImplementedError("attention_bias=true is not implemented by the reference")
    if config.get("use_sliding_window", False):
        raise NotImplementedError("use_sliding_window=true is not implemented by the reference")
    num_heads = config["num_attention_heads"]
    adaptor = None
    if "entity_adaptor" in config:
        settings = config["entity_adaptor"]
        adaptor = AdaptorConfig(settings["entity_dim"], settings["hidden_dim"], settings["activation"])
        activation(adaptor.activation)  # refuse unknown names at load time
    return Qwen3Config(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=config.get("num_key_value_heads", num_heads),
        head_dim=config.get("head_dim") or config["hidden_size"] // num_heads,
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=_rope_theta(config),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        hidden_act=config.get("hidden_act", "silu"),
        entity_token_id=config.get("entity_token_id"),
        adaptor=adaptor,
    )


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as stream:
        return config_from_dict(json.load(stream))


# ---- building blocks ---------------------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """Qwen3RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_cos_sin(positions, head_dim, theta):
    """cos, sin of shape [num_positions, head_dim], the frequencies repeated twice as in HF."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)  # [num_positions, head_dim / 2]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    """x: [num_positions, num_heads, head_dim]; cos, sin: [num_positions, head_dim]."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def softmax(scores, axis=-1):
    shifted = np.exp(scores - np.max(scores, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


@dataclass
class LayerWeights:
    """One decoder layer; Linear weights are [out_features, in_features] as in PyTorch."""
    input_norm: np.ndarray           # [hidden]
    q_proj: np.ndarray               # [num_heads * head_dim, hidden]
    k_proj: np.ndarray               # [num_kv_heads * head_dim, hidden]
    v_proj: np.ndarray               # [num_kv_heads * head_dim, hidden]
    q_norm: np.ndarray               # [head_dim]
    k_norm: np.ndarray               # [head_dim]
    o_proj: np.ndarray               # [hidden, num_heads * head_dim]
    post_attention_norm: np.ndarray  # [hidden]
    gate_proj: np.ndarray            # [intermediate, hidden]
    up_proj: np.ndarray              # [intermediate, hidden]
    down_proj: np.ndarray            # [hidden, intermediate]


# ---- the model ---------------------------------------------------------------------------------------------

class Qwen3Reference:
    def __init__(self, model_dir):
        self.config = load_config(model_dir)
        self.tensors = {  # every stored tensor by name, float64
            name: array.astype(np.float64) for name, array in read_model_tensors(model_dir).items()}
        c = self.config
        self.embed_tokens = self._take("model.embed_tokens.weight", [c.vocab_size, c.hidden_size])
        self.layers = [self._layer(i) for i in range(c.num_layers)]
        self.final_norm = self._take("model.norm.weight", [c.hidden_size])
        if c.tie_word_embeddings:
            self.lm_head = self.embed_tokens
        else:
            self.lm_head = self._take("lm_head.weight", [c.vocab_size, c.hidden_size])
        self.adaptor_weights = None
        if c.adaptor is not None:
            a = c.adaptor
            self.adaptor_weights = {
                "fc1.weight": self._take("adaptor.fc1.weight", [a.hidden_dim, a.entity_dim]),
                "fc1.bias": self._take("adaptor.fc1.bias", [a.hidden_dim]),
                "fc2.weight": self._take("adaptor.fc2.weight", [c.hidden_size, a.hidden_dim]),
                "fc2.bias": self._take("adaptor.fc2.bias", [c.hidden_size]),
            }

    def _take(self, name, shape):
        if name not in self.tensors:
            raise ValueError(f"tensor {name} is missing from the model")
        array = self.tensors[name]
        if list(array.shape) != list(shape):
            raise ValueError(f"tensor {name} has shape {list(array.shape)}, expected {shape}")
        return array

    def _layer(self, i):
        c = self.config
        p = f"model.layers.{i}."
        q_width, kv_width = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        return LayerWeights(
            input_norm=self._take(p + "input_layernorm.weight", [c.hidden_size]),
            q_proj=self._take(p + "self_attn.q_proj.weight", [q_width, c.hidden_size]),
            k_proj=self._take(p + "self_attn.k_proj.weight", [kv_width, c.hidden_size]),
            v_proj=self._take(p + "self_attn.v_proj.weight", [kv_width, c.hidden_size]),
            q_norm=self._take(p + "self_attn.q_norm.weight", [c.head_dim]),
            k_norm=self._take(p + "self_attn.k_norm.weight", [c.head_dim]),
            o_proj=self._take(p + "self_attn.o_proj.weight", [c.hidden_size, q_width]),
            post_attention_norm=self._take(p + "post_attention_layernorm.weight", [c.hidden_size]),
            gate_proj=self._take(p + "mlp.gate_proj.weight", [c.intermediate_size, c.hidden_size]),
            up_proj=self._take(p + "mlp.up_proj.weight", [c.intermediate_size, c.hidden_size]),
            down_proj=self._take(p + "mlp.down_proj.weight", [c.hidden_size, c.intermediate_size]),
        )

    def adaptor(self, entity_vectors):
        """[num_entities, entity_dim] -> [num_entities, hidden]: fc2(act(fc1(v)))."""
        w = self.adaptor_weights
        hidden = np.asarray(entity_vectors, dtype=np.float64) @ w["fc1.weight"].T + w["fc1.bias"]
        return activation(self.config.adaptor.activation)(hidden) @ w["fc2.weight"].T + w["fc2.bias"]

    def input_embeddings(self, token_ids, entity_vectors=None):
        """[num_tokens, hidden]: vocabulary rows, with entity positions replaced by adaptor outputs in order."""
        c = self.config
        token_ids = np.asarray(token_ids, dtype=np.int64)
        if token_ids.min() < 0 or token_ids.max() >= c.vocab_size:
            raise ValueError(f"token ids must lie in [0, {c.vocab_size})")
        embeddings = self.embed_tokens[token_ids].copy()
        if c.adaptor is None:
            if entity_vectors is not None:
                raise ValueError("entity vectors given but the model has no entity adaptor")
            return embeddings
        entity_positions = np.flatnonzero(token_ids == c.entity_token_id)
        num_vectors = 0 if entity_vectors is None else len(entity_vectors)
        if num_vectors != len(entity_positions):
            raise ValueError(f"{len(entity_positions)} entity positions but {num_vectors} entity vectors")
        if num_vectors:
            embeddings[entity_positions] = self.adaptor(entity_vectors)
        return embeddings

    def attention(self, x, layer, cos, sin):
        """Causal grouped-query self-attention of one layer; x: [num_tokens, hidden] (already normed)."""
        c = self.config
        num_tokens = x.shape[0]
        q = (x @ layer.q_proj.T).reshape(num_tokens, c.num_heads, c.head_dim)
        k = (x @ layer.k_proj.T).reshape(num_tokens, c.num_kv_heads, c.head_dim)
        v = (x @ layer.v_proj.T).reshape(num_tokens, c.num_kv_heads, c.head_dim)
        q = apply_rope(rms_norm(q, layer.q_norm, c.rms_norm_eps), cos, sin)  # per-head norm before RoPE
        k = apply_rope(rms_norm(k, layer.k_norm, c.rms_norm_eps), cos, sin)
        group = c.num_heads // c.num_kv_heads  # query head h reads kv head h // group (HF repeat_kv)
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(c.head_dim)  # [heads, query, key]
        future = np.triu(np.ones((num_tokens, num_tokens), dtype=bool), k=1)
        scores[:, future] = -np.inf
        out = np.einsum("hqk,khd->qhd", softmax(scores), v).reshape(num_tokens, c.num_heads * c.head_dim)
        return out @ layer.o_proj.T

    def mlp(self, x, layer):
        gate = activation(self.config.hidden_act)(x @ layer.gate_proj.T)
        return (gate * (x @ layer.up_proj.T)) @ layer.down_proj.T

    def forward(self, token_ids, entity_vectors=None):
        """Logits [num_tokens, vocab] (float64) for every prompt position."""
        c = self.config
        x = self.input_embeddings(token_ids, entity_vectors)
        cos, sin = rope_cos_sin(np.arange(len(token_ids)), c.head_dim, c.rope_theta)
        for layer in self.layers:
            x = x + self.attention(rms_norm(x, layer.input_norm, c.rms_norm_eps), layer, cos, sin)
            x = x + self.mlp(rms_norm(x, layer.post_attention_norm, c.rms_norm_eps), layer)
        return rms_norm(x, self.final_norm, c.rms_norm_eps) @ self.lm_head.T


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", required=True, help="comma-separated token ids")
    parser.add_argument("--entity-vectors", help="float32 .npy [num_entities, entity_dim]")
    parser.add_argument("--out", required=True, help="float32 .npy [num_tokens, vocab]")
    args = parser.parse_args()
    tokens = [int(token) for token in args.tokens.split(",")]
    entity_vectors = np.load(args.entity_vectors) if args.entity_vectors else None
    logits = Qwen3Reference(args.model).forward(tokens, entity_vectors)
    np.save(args.out, logits.astype(np.float32))


if __name__ == "__main__":
    main()
