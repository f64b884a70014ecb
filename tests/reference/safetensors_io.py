"""Minimal safetensors reader and writer for the NumPy reference, written from the format description.

A file is: u64 little-endian header length N, N bytes of JSON header
({name: {"dtype", "shape", "data_offsets": [begin, end]}, optional "__metadata__"}), then the data; offsets
are relative to the first byte after the header. Only the floating-point dtypes models use are supported.
"""

import json
import os
import struct

import numpy as np

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
ADAPTOR_FILE = "adaptor.safetensors"

_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def _read_header(path):
    with open(path, "rb") as stream:
        (header_bytes,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(header_bytes))
    header.pop("__metadata__", None)
    return header, 8 + header_bytes


def read_safetensors(path):
    """Returns {name: float32 or float64 ndarray}; BF16 is widened exactly (bits << 16), F16 via numpy."""
    header, data_start = _read_header(path)
    with open(path, "rb") as stream:
        stream.seek(data_start)
        data = stream.read()
    tensors = {}
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}; expected one of {sorted(_NUMPY_DTYPES)}")
        begin, end = info["data_offsets"]
        raw = np.frombuffer(data[begin:end], dtype=_NUMPY_DTYPES[dtype])
        if dtype == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        if raw.size != int(np.prod(info["shape"], dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: {raw.size} elements do not fill shape {info['shape']}")
        tensors[name] = raw.astype(np.float64 if dtype == "F64" else np.float32).reshape(info["shape"])
    return tensors


def model_files(model_dir):
    """The safetensors files of a Hugging Face model folder: one file, or the shards named by the index,
    plus adaptor.safetensors when present."""
    index_path = os.path.join(model_dir, INDEX_FILE)
    if os.path.exists(index_path):
        with open(index_path) as stream:
            weight_map = json.load(stream)["weight_map"]
        files = sorted(set(weight_map.values()))
    else:
        files = [SINGLE_FILE]
    if os.path.exists(os.path.join(model_dir, ADAPTOR_FILE)):
        files.append(ADAPTOR_FILE)
    return [os.path.join(model_dir, name) for name in files]


def read_model_tensors(model_dir):
    """All tensors of a model folder by name; a name stored twice is an error."""
    tensors = {}
    for path in model_files(model_dir):
        for name, array in read_safetensors(path).items():
            if name in tensors:
                raise ValueError(f"{model_dir}: tensor {name} is stored twice (again in {path})")
            tensors[name] = array
    return tensors


def stored_dtypes(model_dir):
    """The set of safetensors dtype names ("F32", "BF16", ...) the model folder stores."""
    return {info["dtype"] for path in model_files(model_dir) for info in _read_header(path)[0].values()}


def f32_to_bf16_bits(array):
    """Round float32 to bfloat16 (nearest, ties to even) and return the uint16 bit patterns."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def encode(array, dtype):
    """(safetensors dtype name, little-endian bytes) of a float array stored as dtype "f32", "bf16" or "f16"."""
    if dtype == "f32":
        return "F32", np.ascontiguousarray(array, dtype="<f4").tobytes()
    if dtype == "bf16":
        return "BF16", f32_to_bf16_bits(array).astype("<u2").tobytes()
    if dtype == "f16":
        return "F16", np.ascontiguousarray(array, dtype="<f2").tobytes()
    raise ValueError(f"unknown storage dtype {dtype!r}; expected f32, bf16 or f16")


def write_safetensors(path, tensors, dtype):
    """Writes {name: float array} to path, every tensor stored as dtype; returns the data bytes written."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name, array in tensors.items():
        dtype_name, blob = encode(array, dtype)
        header[name] = {"dtype": dtype_name, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as stream:
        stream.write(struct.pack("<Q", len(header_bytes)))
        stream.write(header_bytes)
        for blob in blobs:
            stream.write(blob)
    return offset
