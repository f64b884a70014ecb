// NumPy .npy files of float32, C order: reference activations and logits exchanged with Python, and
// entity vectors given as arrays.
//
// Reads format versions 1.0, 2.0 and 3.0 (the header is a Python dict literal with 'descr', 'fortran_order'
// and 'shape'); writes 1.0, or 2.0 when the header does not fit 1.0's 16-bit length, with the header padded
// so that data starts on a 64-byte boundary, as numpy.save does. Only little-endian hosts are supported.
//
// All functions are thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace recgpt {

struct NpyArray {
  std::vector<int64_t> shape;  // () for a scalar, which holds one element
  std::vector<float> data;     // row-major, product(shape) elements
};

// kNotFound / kIoError when the file cannot be read; kDataLoss for a bad magic, a malformed or truncated
// header, or a data size other than product(shape) * 4; kUnimplemented naming the dtype for anything but
// '<f4' (e.g. '<f8', '>f4', structured dtypes), for fortran_order True, and for unknown format versions.
Result<NpyArray> read_npy_f32(const std::string& path);

// kInvalidArgument when a dimension is negative or product(shape) != data.size(); kIoError when the file
// cannot be written.
Status write_npy_f32(const std::string& path, std::span<const int64_t> shape, std::span<const float> data);

}  // namespace recgpt
