#!/usr/bin/python3
"""Bad model folders give a named error and a distinct exit code from `recgpt logits`, never a crash.

Usage: check_bad_models.py RECGPT_BINARY GOOD_MODEL_DIR WORK_DIR
Each case copies the good model, breaks one thing, runs the CLI with a deadline and checks that it exits
with a status code (10..30, see common/status.h), prints `recgpt: error: <code name>: ...` naming the
culprit, and was not killed by a signal.
"""
import json
import os
import shutil
import struct
import subprocess
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def write_safetensors(path, header, payload):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + payload)


def edit_header(edit):
    def apply(model_dir):
        path = os.path.join(model_dir, "model.safetensors")
        header, payload = read_safetensors(path)
        edit(header)
        write_safetensors(path, header, payload)
    return apply


def drop_tensor(header):
    del header["model.norm.weight"]


def transpose_shape(header):
    entry = header["model.layers.0.mlp.gate_proj.weight"]
    entry["shape"] = list(reversed(entry["shape"]))


def offsets_past_end(header):
    entry = header["model.layers.0.mlp.up_proj.weight"]
    entry["data_offsets"] = [entry["data_offsets"][0], entry["data_offsets"][1] + 10**9]


def unknown_dtype(header):
    header["model.norm.weight"]["dtype"] = "F64"


def truncate(model_dir):
    path = os.path.join(model_dir, "model.safetensors")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def huge_header_length(model_dir):
    path = os.path.join(model_dir, "model.safetensors")
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 2**62))


def write_file(name, text):
    def apply(model_dir):
        with open(os.path.join(model_dir, name), "w") as f:
            f.write(text)
    return apply


def edit_config(edit):
    def apply(model_dir):
        path = os.path.join(model_dir, "config.json")
        with open(path) as f:
            config = json.load(f)
        edit(config)
        with open(path, "w") as f:
            json.dump(config, f)
    return apply


def remove(name):
    return lambda model_dir: os.remove(os.path.join(model_dir, name))


CASES = [
    # name, breakage, expected code name, text the message must contain
    ("missing tensor", edit_header(drop_tensor), "not_found", "model.norm.weight"),
    ("wrong shape", edit_header(transpose_shape), "data_loss", "gate_proj"),
    ("truncated file", truncate, "data_loss", "model.safetensors"),
    ("header offsets past the end", edit_header(offsets_past_end), "data_loss", "up_proj"),
    ("header length past the end", huge_header_length, "data_loss", "header"),
    ("bad config JSON", write_file("config.json", "{\"hidden_size\": 64,"), "data_loss", "config"),
    ("unknown dtype", edit_header(unknown_dtype), "unimplemented", "F64"),
    ("missing config", remove("config.json"), "not_found", "config.json"),
    ("unknown architecture", edit_config(lambda c: c.update(architectures=["LlamaForCausalLM"], model_type="llama")),
     "unimplemented", "LlamaForCausalLM"),
    ("negative layer count", edit_config(lambda c: c.update(num_hidden_layers=-2)), "invalid_argument",
     "num_hidden_layers"),
]


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    recgpt, good_model, work = sys.argv[1:]
    failures = 0
    for name, breakage, code_name, needle in CASES:
        model_dir = os.path.join(work, name.replace(" ", "_"))
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(good_model, model_dir)
        breakage(model_dir)
        out = os.path.join(work, "logits.npy")
        result = subprocess.run([recgpt, "logits", "--model", model_dir, "--tokens", "1,2,3", "--out", out],
                                capture_output=True, text=True, timeout=60)
        stderr = result.stderr.strip()
        ok = (10 <= result.returncode <= 30 and f"recgpt: error: {code_name}:" in stderr and needle in stderr)
        print(f"{'PASS' if ok else 'FAIL'} {name}: exit {result.returncode}: {stderr[:200]}")
        failures += 0 if ok else 1
    print(f"{len(CASES) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
