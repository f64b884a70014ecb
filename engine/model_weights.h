// Views of every weight of a Qwen3 model (plus RecGPT's entity adaptor), by role rather than by name.
// Shapes follow the Hugging Face layout: linear weights are [out_features, in_features], row-major.
// The views do not own memory; ModelFiles (engine/model_files.h) keeps it alive.
#pragma once

#include <optional>
#include <vector>

#include "engine/tensor_view.h"

namespace recgpt {

// One decoder layer. q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim.
struct LayerWeights {
  TensorView q_proj;                    // [q, hidden_size]
  TensorView k_proj;                    // [kv, hidden_size]
  TensorView v_proj;                    // [kv, hidden_size]
  TensorView o_proj;                    // [hidden_size, q]
  TensorView q_norm;                    // [head_dim], RMSNorm over each query head
  TensorView k_norm;                    // [head_dim], RMSNorm over each key head
  TensorView input_layernorm;           // [hidden_size]
  TensorView post_attention_layernorm;  // [hidden_size]
  TensorView gate_proj;                 // [intermediate_size, hidden_size]
  TensorView up_proj;                   // [intermediate_size, hidden_size]
  TensorView down_proj;                 // [hidden_size, intermediate_size]
};

// The entity adaptor fc2(act(fc1(x))) of EntityAdaptorConfig.
struct AdaptorWeights {
  TensorView fc1_weight;  // [hidden_dim, entity_dim]
  TensorView fc1_bias;    // [hidden_dim]
  TensorView fc2_weight;  // [hidden_size, hidden_dim]
  TensorView fc2_bias;    // [hidden_size]
};

struct ModelWeights {
  TensorView embed_tokens;           // [vocab_size, hidden_size]
  std::vector<LayerWeights> layers;  // num_hidden_layers of them
  TensorView norm;                   // [hidden_size], the final RMSNorm
  TensorView lm_head;  // [vocab_size, hidden_size]; the same memory as embed_tokens when tie_word_embeddings
  std::optional<AdaptorWeights> adaptor;  // present iff the config has an entity_adaptor
};

}  // namespace recgpt
