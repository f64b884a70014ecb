#!/usr/bin/python3
"""Writes a small random-weight Qwen3 model folder in exactly the Hugging Face format.

Independent of `recgpt make-model`, so the logits comparison also covers shapes and layouts the C++ generator
does not produce: head_dim * heads != hidden, GQA ratios, tied or untied lm_head, f32/bf16/f16 storage, one
file or two shards with an index, the entity adaptor inside the model files or in adaptor.safetensors.

Weights are drawn in one fixed order from the seed, so two folders with the same seed and shapes hold the same
values whatever their storage dtype, sharding or adaptor placement. Scales keep activations O(1): Linear
weights have std 1/sqrt(fan_in), embeddings std 1, norm weights uniform in [0.8, 1.2].

  /usr/bin/python3 make_random_model.py --out DIR [--seed 1] [--dtype bf16] [--shards 2] [--adaptor separate] ...
"""

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

import safetensors_io

STORAGE_TORCH_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
ADAPTOR_PLACEMENTS = ("none", "main", "separate")
ADAPTOR_ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "silu", "relu")


@dataclass(frozen=True)
class ModelSpec:
    seed: int = 0
    vocab_size: int = 300
    hidden_size: int = 64
    intermediate_size: int = 96
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    tie_word_embeddings: bool = True
    dtype: str = "f32"               # storage dtype: f32, bf16 or f16
    num_shards: int = 1              # 1 (model.safetensors) or 2 (shards + index)
    adaptor: str = "none"            # none, main (in the model files) or separate (adaptor.safetensors)
    adaptor_activation: str = "gelu"
    entity_dim: int = 40
    adaptor_hidden_dim: int = 80
    rope_theta: float = 1000000.0
    rope_parameters_style: bool = False  # rope_parameters.rope_theta (newer configs) instead of rope_theta
    rms_norm_eps: float = 1e-6


# ---- tokenizer: 256 byte tokens, a few merges, then the special tokens -------------------------------------

_MERGES = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġt", "he"), ("e", "r"), ("a", "n"), ("o", "n"), ("Ġ", "a")]
_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|entity|>"]
_QWEN2_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                        r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_to_unicode():
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to code points from 256 up."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, next_code_point = {}, 256
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(next_code_point)
            next_code_point += 1
    return mapping


def special_token_ids():
    first = 256 + len(_MERGES)
    return {token: first + i for i, token in enumerate(_SPECIAL_TOKENS)}


def tokenizer_json():
    vocab = {symbol: byte for byte, symbol in _byte_to_unicode().items()}
    for left, right in _MERGES:
        vocab[left + right] = len(vocab)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": token_id, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for token, token_id in special_token_ids().items()
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _QWEN2_SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{left} {right}" for left, right in _MERGES]},
    }


# ---- config and weights ------------------------------------------------------------------------------------

def config_json(spec):
    special = special_token_ids()
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": spec.rms_norm_eps,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": spec.num_layers,
        "bos_token_id": special["<|endoftext|>"],
        "eos_token_id": special["<|im_end|>"],
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": STORAGE_TORCH_DTYPES[spec.dtype],
        "transformers_version": "4.51.0",
    }
    if spec.rope_parameters_style:
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": spec.rope_theta}
    else:
        config["rope_theta"] = spec.rope_theta
        config["rope_scaling"] = None
    if spec.adaptor != "none":
        config["entity_token_id"] = special["<|entity|>"]
        config["entity_adaptor"] = {"entity_dim": spec.entity_dim, "hidden_dim": spec.adaptor_hidden_dim,
                                    "activation": spec.adaptor_activation}
    return config


def random_weights(spec):
    """(model tensors, adaptor tensors), float32, drawn in a fixed order from spec.seed."""
    rng = np.random.default_rng(spec.seed)

    def linear(out_features, in_features):
        return rng.normal(0.0, 1.0 / np.sqrt(in_features), (out_features, in_features)).astype(np.float32)

    def norm(size):
        return rng.uniform(0.8, 1.2, size).astype(np.float32)

    hidden, q_width, kv_width = spec.hidden_size, spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    model = {"model.embed_tokens.weight": rng.normal(0.0, 1.0, (spec.vocab_size, hidden)).astype(np.float32)}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        model[p + "input_layernorm.weight"] = norm(hidden)
        model[p + "self_attn.q_proj.weight"] = linear(q_width, hidden)
        model[p + "self_attn.k_proj.weight"] = linear(kv_width, hidden)
        model[p + "self_attn.v_proj.weight"] = linear(kv_width, hidden)
        model[p + "self_attn.q_norm.weight"] = norm(spec.head_dim)
        model[p + "self_attn.k_norm.weight"] = norm(spec.head_dim)
        model[p + "self_attn.o_proj.weight"] = linear(hidden, q_width)
        model[p + "post_attention_layernorm.weight"] = norm(hidden)
        model[p + "mlp.gate_proj.weight"] = linear(spec.intermediate_size, hidden)
        model[p + "mlp.up_proj.weight"] = linear(spec.intermediate_size, hidden)
        model[p + "mlp.down_proj.weight"] = linear(hidden, spec.intermediate_size)
    model["model.norm.weight"] = norm(hidden)
    lm_head = linear(spec.vocab_size, hidden)  # drawn even when tied, so later draws do not depend on tying
    if not spec.tie_word_embeddings:
        model["lm_head.weight"] = lm_head
    adaptor = {
        "adaptor.fc1.weight": linear(spec.adaptor_hidden_dim, spec.entity_dim),
        "adaptor.fc1.bias": rng.normal(0.0, 0.1, spec.adaptor_hidden_dim).astype(np.float32),
        "adaptor.fc2.weight": linear(hidden, spec.adaptor_hidden_dim),
        "adaptor.fc2.bias": rng.normal(0.0, 0.1, hidden).astype(np.float32),
    }
    return model, adaptor


def _validate(spec):
    if spec.dtype not in STORAGE_TORCH_DTYPES:
        raise ValueError(f"dtype {spec.dtype!r}: expected one of {sorted(STORAGE_TORCH_DTYPES)}")
    if spec.num_shards not in (1, 2):
        raise ValueError(f"num_shards {spec.num_shards}: expected 1 or 2")
    if spec.adaptor not in ADAPTOR_PLACEMENTS:
        raise ValueError(f"adaptor {spec.adaptor!r}: expected one of {ADAPTOR_PLACEMENTS}")
    if spec.adaptor_activation not in ADAPTOR_ACTIVATIONS:
        raise ValueError(f"adaptor activation {spec.adaptor_activation!r}: expected one of {ADAPTOR_ACTIVATIONS}")
    if spec.num_heads % spec.num_kv_heads or spec.head_dim % 2:
        raise ValueError("num_heads must be a multiple of num_kv_heads and head_dim even")
    if spec.vocab_size < max(special_token_ids().values()) + 1:
        raise ValueError(f"vocab_size must be at least {max(special_token_ids().values()) + 1}")


def write_model(out_dir, spec):
    """Writes config.json, tokenizer.json and the safetensors files of spec into out_dir (created)."""
    _validate(spec)
    os.makedirs(out_dir, exist_ok=True)
    model, adaptor = random_weights(spec)
    if spec.adaptor == "main":
        model.update(adaptor)
    elif spec.adaptor == "separate":
        safetensors_io.write_safetensors(os.path.join(out_dir, safetensors_io.ADAPTOR_FILE), adaptor, spec.dtype)
    if spec.num_shards == 1:
        safetensors_io.write_safetensors(os.path.join(out_dir, safetensors_io.SINGLE_FILE), model, spec.dtype)
    else:
        _write_two_shards(out_dir, model, spec.dtype)
    with open(os.path.join(out_dir, "config.json"), "w") as stream:
        json.dump(config_json(spec), stream, indent=2)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as stream:
        json.dump(tokenizer_json(), stream, ensure_ascii=False)


def _write_two_shards(out_dir, model, dtype):
    names = list(model)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map, total_bytes = {}, 0
    for i, half in enumerate(halves):
        file_name = f"model-{i + 1:05d}-of-{len(halves):05d}.safetensors"
        total_bytes += safetensors_io.write_safetensors(
            os.path.join(out_dir, file_name), {name: model[name] for name in half}, dtype)
        weight_map.update({name: file_name for name in half})
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    with open(os.path.join(out_dir, safetensors_io.INDEX_FILE), "w") as stream:
        json.dump(index, stream, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    for field in dataclasses.fields(ModelSpec):
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, type=lambda text: text.lower() in ("1", "true", "yes"), default=field.default)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default)
    args = vars(parser.parse_args())
    out_dir = args.pop("out")
    write_model(out_dir, ModelSpec(**args))


if __name__ == "__main__":
    main()
