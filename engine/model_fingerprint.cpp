#include "engine/model_fingerprint.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "engine/model_files.h"

namespace recgpt {
namespace {

constexpr size_t kSampleBytes = 4096;

// FNV-1a, 64 bits: stable across builds and machines, unlike std::hash.
struct Fnv1a {
  uint64_t state = 0xcbf29ce484222325ull;
  void add(const void* data, size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < bytes; ++i) state = (state ^ p[i]) * 0x100000001b3ull;
  }
  template <typename T>
  void add_value(const T& value) {
    add(&value, sizeof(T));
  }
};

void add_tensor(Fnv1a& hash, const TensorView& tensor) {
  hash.add_value(static_cast<int>(tensor.dtype));
  for (int64_t dim : tensor.shape) hash.add_value(dim);
  const auto* bytes = static_cast<const unsigned char*>(tensor.data);
  const size_t size = tensor.num_bytes();
  if (bytes == nullptr || size == 0) return;
  const size_t sample = std::min(kSampleBytes, size);
  for (size_t offset : {size_t{0}, (size - sample) / 2, size - sample}) hash.add(bytes + offset, sample);
}

}  // namespace

Result<std::string> model_fingerprint(const ModelFiles& model) {
  std::ifstream config(model.dir() + "/config.json", std::ios::binary);
  if (!config) return io_error("cannot read " + model.dir() + "/config.json for the model fingerprint");
  std::stringstream text;
  text << config.rdbuf();
  Fnv1a hash;
  const std::string json = text.str();
  hash.add(json.data(), json.size());
  const ModelWeights& weights = model.weights();
  add_tensor(hash, weights.embed_tokens);
  for (const LayerWeights& layer : weights.layers) {
    for (const TensorView* tensor : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.q_norm,
                                     &layer.k_norm, &layer.input_layernorm, &layer.post_attention_layernorm,
                                     &layer.gate_proj, &layer.up_proj, &layer.down_proj}) {
      add_tensor(hash, *tensor);
    }
  }
  add_tensor(hash, weights.norm);
  add_tensor(hash, weights.lm_head);
  if (weights.adaptor) {
    for (const TensorView* tensor : {&weights.adaptor->fc1_weight, &weights.adaptor->fc1_bias,
                                     &weights.adaptor->fc2_weight, &weights.adaptor->fc2_bias}) {
      add_tensor(hash, *tensor);
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash.state));
  return std::string(hex);
}

}  // namespace recgpt
