// An opened Hugging Face model folder: config.json, the weights (model.safetensors, or
// model.safetensors.index.json and its shards), an optional adaptor.safetensors, and tokenizer.json.
//
// Weights are validated against the config (every tensor present, every shape exact) before open()
// returns, so a ModelFiles always describes a loadable model. F32 and BF16 tensors stay memory-mapped
// (no copy; pages load on first touch). F16 tensors are converted once, at open(), into owned F32 buffers:
// the kernels do not compute in F16, and converting per use would cost more than the memory. Tensors whose
// bytes are not aligned to their element size in the file are copied into aligned owned buffers.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "engine/safetensors.h"

namespace recgpt {

class ModelFiles {
 public:
  // Opens and validates `dir`. Errors name the file or tensor at fault: kNotFound for a missing config,
  // weight file, shard or tensor; kDataLoss for corrupt files, wrong shapes or an index that disagrees
  // with its shards; kInvalidArgument / kUnimplemented from parse_model_config and parse_safetensors.
  static Result<std::unique_ptr<ModelFiles>> open(const std::string& dir);

  ModelFiles(const ModelFiles&) = delete;
  ModelFiles& operator=(const ModelFiles&) = delete;

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  // Views into this object's mappings and buffers: valid while it lives.
  const ModelWeights& weights() const { return weights_; }
  // dir/tokenizer.json; it may not exist (weights load without a tokenizer).
  std::string tokenizer_path() const;
  // Bytes of the distinct tensors in weights() as used (F16 counted as its F32 copy; a tied lm_head once).
  size_t weight_bytes() const { return weight_bytes_; }

  // Drops this process's resident pages of `bytes` where they lie in a mapped weight file (MADV_DONTNEED on the
  // pages they cover: those stay in the page cache and fault back in if read again), for a backend that has
  // copied those bytes and reads only its copy. Owned buffers (converted or realigned tensors) are left alone. A
  // page shared with bytes outside the span is dropped too, which costs those a fault, not their contents.
  void release_resident_pages(std::span<const std::byte> bytes) const;

 private:
  ModelFiles() = default;

  std::string dir_;
  ModelConfig config_;
  ModelWeights weights_;
  size_t weight_bytes_ = 0;
  std::vector<SafetensorsFile> files_;                 // every opened weight file; weights_ points into them
  std::vector<std::unique_ptr<std::byte[]>> buffers_;  // converted (F16) or realigned tensors
};

}  // namespace recgpt
