#!/usr/bin/python3
"""`recgpt realign-model` puts a Hugging Face-style checkpoint's weights on cache lines and changes nothing else.

Usage: check_realign_model.py RECGPT_BINARY GOOD_MODEL_DIR WORK_DIR
Copies the model with its safetensors header padded to 8 bytes only, as Hugging Face's writer does, so that the
data section starts off a cache line; realigns it; checks that the output's data section and every tensor of whole
cache lines start on a line, that every tensor's dtype, shape and bytes are unchanged, that the other files are
copied, that `recgpt logits` gives bit-identical logits for both folders, and that an existing output folder is
refused with a named error.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

LINE = 64


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    return 8 + length, header, data[8 + length:]


def tensors_of(path):
    _, header, payload = read_safetensors(path)
    return {name: (entry["dtype"], entry["shape"], payload[entry["data_offsets"][0]:entry["data_offsets"][1]])
            for name, entry in header.items()}


def write_misaligned(source, destination):
    """The same tensors, the header padded to 8 bytes and then by 8 more until the data is off a cache line."""
    _, header, payload = read_safetensors(source)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    while (8 + len(text)) % LINE == 0:
        text += b" " * 8
    with open(destination, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + payload)
    return (8 + len(text)) % LINE


def logits(recgpt, model_dir, out_path):
    result = subprocess.run([recgpt, "logits", "--model", model_dir, "--tokens", "1,2,3,4,5", "--out", out_path],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"recgpt logits on {model_dir} exited {result.returncode}: {result.stderr.strip()[:300]}")
    with open(out_path, "rb") as f:
        return f.read()


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    recgpt, good_dir, work_dir = sys.argv[1:]
    shutil.rmtree(work_dir, ignore_errors=True)
    misaligned, realigned = os.path.join(work_dir, "hf"), os.path.join(work_dir, "realigned")
    shutil.copytree(good_dir, misaligned)
    weights = os.path.join(misaligned, "model.safetensors")
    errors = []
    offset = write_misaligned(os.path.join(good_dir, "model.safetensors"), weights)
    if offset == 0:
        errors.append("the test could not misalign its input")

    result = subprocess.run([recgpt, "realign-model", "--model", misaligned, "--out", realigned],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        print(f"FAIL: recgpt realign-model exited {result.returncode}: {result.stderr.strip()[:500]}")
        return 1

    data_start, header, _ = read_safetensors(os.path.join(realigned, "model.safetensors"))
    if data_start % LINE != 0:
        errors.append(f"the realigned data section starts at {data_start}, off a cache line")
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        if (end - begin) % LINE == 0 and (data_start + begin) % LINE != 0:
            errors.append(f"tensor {name} of whole cache lines starts at {data_start + begin}, off a line")
    if tensors_of(weights) != tensors_of(os.path.join(realigned, "model.safetensors")):
        errors.append("the realigned file's tensors differ from the input's")
    for name in sorted(os.listdir(misaligned)):
        if name.endswith(".safetensors"):
            continue
        with open(os.path.join(misaligned, name), "rb") as a, open(os.path.join(realigned, name), "rb") as b:
            if a.read() != b.read():
                errors.append(f"{name} was not copied as it is")
    if logits(recgpt, misaligned, os.path.join(work_dir, "a.npy")) != logits(recgpt, realigned,
                                                                             os.path.join(work_dir, "b.npy")):
        errors.append("logits differ between the input and the realigned folder")

    again = subprocess.run([recgpt, "realign-model", "--model", misaligned, "--out", realigned],
                           capture_output=True, text=True, timeout=120)
    if again.returncode == 0 or "invalid_argument" not in again.stderr or "already exists" not in again.stderr:
        errors.append(f"an existing output folder was not refused by name: exit {again.returncode}, "
                      f"{again.stderr.strip()[:200]}")

    for error in errors:
        print(f"FAIL: {error}")
    if errors:
        return 1
    print(f"realigned: data section at +{offset} -> on a cache line, tensors and logits unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
