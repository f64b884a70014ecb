// The model's weights in GPU memory, uploaded once at load: projections and embeddings as bf16 (converted from
// f32 or f16 on the way), norm vectors and the entity adaptor as f32. The projections that read the same input
// are stored as one matrix each (q, k, v -> qkv; gate, up -> gate_up) so a layer runs four GEMMs.
// Internal to cuda_kernels/.
#pragma once

#include <optional>
#include <vector>

#include "common/status.h"
#include "cuda_kernels/device_buffer.h"

namespace recgpt {
class ModelFiles;
}

namespace recgpt::cuda {

// [rows, columns] row-major: a linear layer's [out_features, in_features].
struct DeviceMatrix {
  DeviceBuffer memory;
  int rows = 0;
  int columns = 0;
  bool is_f32 = false;  // else bf16
};

struct DeviceLayerWeights {
  DeviceMatrix qkv;                                              // [(heads + 2 kv_heads) * head_dim, hidden]
  DeviceMatrix o;                                                // [hidden, heads * head_dim]
  DeviceMatrix gate_up;                                          // [2 intermediate, hidden], gate rows first
  DeviceMatrix down;                                             // [hidden, intermediate]
  DeviceBuffer input_norm, post_attention_norm, q_norm, k_norm;  // f32 [hidden], [hidden], [head_dim] x2
};

struct DeviceAdaptorWeights {
  DeviceMatrix fc1, fc2;            // f32 [hidden_dim, entity_dim], [hidden, hidden_dim]
  DeviceBuffer fc1_bias, fc2_bias;  // f32 [hidden_dim], [hidden]
};

struct DeviceWeights {
  DeviceMatrix embed_tokens;            // [vocab, hidden]
  std::optional<DeviceMatrix> lm_head;  // [vocab, hidden]; empty when tied to embed_tokens
  std::vector<DeviceLayerWeights> layers;
  DeviceBuffer final_norm;  // f32 [hidden]
  std::optional<DeviceAdaptorWeights> adaptor;
  DeviceBuffer rope_inv_freq;  // f32 [head_dim / 2], as Hugging Face computes it

  const DeviceMatrix& output_matrix() const { return lm_head ? *lm_head : embed_tokens; }
  // Bytes of GPU memory the weights take.
  size_t bytes() const;
};

// Uploads every weight of `model` to the current device. kResourceExhausted when the GPU has no room,
// kUnavailable for another CUDA failure.
Result<DeviceWeights> upload_weights(const ModelFiles& model);

}  // namespace recgpt::cuda
