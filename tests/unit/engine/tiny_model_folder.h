// Small Qwen3 model folders written to disk for loader tests, through the project's own writers.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"

namespace recgpt::testing {

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TemporaryDirectory {
 public:
  TemporaryDirectory();
  ~TemporaryDirectory();
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// hidden 8, intermediate 12, 2 layers, 4 query heads of dim 4 (q = 16 != hidden), 2 kv heads, vocab 32;
// untied. With `with_adaptor`, entity_dim 6 and adaptor hidden_dim 10 ("gelu").
ModelConfig tiny_model_config(bool with_adaptor = false);

// A tensor that owns its bytes.
struct OwnedTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;

  SafetensorsTensor view() const { return {name, dtype, shape, bytes}; }
};

// Element `index` of the tensor numbered `tensor_number` in tiny_model_tensors: a multiple of 1/16 in
// [-0.5, 0.5], exact in F32, BF16 and F16.
float tiny_weight_value(size_t tensor_number, int64_t index);

// Every tensor `config` needs under its HF name (lm_head only when untied, adaptor.* with an adaptor), in
// `dtype`, filled with tiny_weight_value.
std::vector<OwnedTensor> tiny_model_tensors(const ModelConfig& config, DType dtype);

// Element `index` of `tensor` as float, whatever its dtype.
float element_as_float(const OwnedTensor& tensor, int64_t index);

Status write_tensors(const std::string& path, std::span<const OwnedTensor> tensors);
Status write_text(const std::string& path, const std::string& text);

// config.json (model_config_to_json) and model.safetensors holding `tensors`.
Status write_model_folder(const std::string& dir, const ModelConfig& config, std::span<const OwnedTensor> tensors);

}  // namespace recgpt::testing
