// A non-owning view of a dense, row-major tensor: weights inside a memory-mapped file or a buffer owned by
// someone else (ModelFiles, a test). The viewed memory must outlive the view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/dtype.h"

namespace recgpt {

struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // outermost dimension first; empty for a scalar
  const void* data = nullptr;  // num_bytes() bytes, aligned to dtype_size(dtype)

  int64_t num_elements() const {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    return count;
  }
  size_t num_bytes() const { return static_cast<size_t>(num_elements()) * dtype_size(dtype); }
};

// "[2, 3]": shapes in error messages.
inline std::string shape_to_string(std::span<const int64_t> shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace recgpt
