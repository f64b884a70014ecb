// The model hyper-parameters of a Hugging Face Qwen3 `config.json`, plus RecGPT's entity adaptor.
//
// Only Qwen3ForCausalLM is supported. Unknown extra fields are ignored (real configs carry many), but a
// known field with a value this engine cannot honour (sliding-window attention, attention bias, rope
// scaling, quantization, an activation other than SiLU in the MLP) is refused as kUnimplemented rather
// than silently producing wrong outputs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "engine/dtype.h"

namespace recgpt {

// The MLP that maps an entity embedding [entity_dim] into the token embedding space [hidden_size]:
// fc2(act(fc1(x))). Its output replaces the embedding of every `entity_token_id` placeholder token.
struct EntityAdaptorConfig {
  int32_t entity_token_id = 0;  // in [0, vocab_size)
  int entity_dim = 0;
  int hidden_dim = 0;
  std::string activation;  // HF ACT2FN name: "gelu" (erf), "gelu_pytorch_tanh", "silu" or "relu"
};

struct ModelConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;  // divides num_attention_heads; defaults to num_attention_heads
  int head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int vocab_size = 0;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::string hidden_act = "silu";
  DType torch_dtype = DType::kF32;  // the checkpoint's nominal dtype; tensors may differ
  int max_position_embeddings = 32768;
  std::optional<EntityAdaptorConfig> entity_adaptor;
};

// Parses and validates config.json text. Malformed JSON is kDataLoss with the byte position; missing,
// mistyped or out-of-range fields are kInvalidArgument naming the field; unsupported architectures and
// features are kUnimplemented naming them.
Result<ModelConfig> parse_model_config(std::string_view json_text);

// An HF-style config.json for `config` (architectures ["Qwen3ForCausalLM"], model_type "qwen3"), with
// top-level `entity_token_id` and `entity_adaptor` {entity_dim, hidden_dim, activation} when present.
// parse_model_config of the result gives back `config`.
std::string model_config_to_json(const ModelConfig& config);

}  // namespace recgpt
