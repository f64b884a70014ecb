#include "engine/model_config.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>

namespace recgpt {
namespace {

using nlohmann::json;

constexpr int kMaxInt = std::numeric_limits<int>::max();

// The field's value, or nullptr when it is absent or null (HF writes null for "not set").
const json* find_field(const json& object, std::string_view name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

Status wrong_type(std::string_view name, std::string_view expected, const json& value) {
  return invalid_argument("field '" + std::string(name) + "' must be " + std::string(expected) + ", got " +
                          value.type_name());
}

// A positive int; `fallback` is used when the field is absent, which is an error without one.
Result<int> read_positive_int(const json& object, std::string_view name, std::optional<int> fallback = {}) {
  const json* value = find_field(object, name);
  if (value == nullptr) {
    if (fallback) return *fallback;
    return invalid_argument("missing required field '" + std::string(name) + "'");
  }
  if (!value->is_number_integer()) return wrong_type(name, "an integer", *value);
  bool positive = value->is_number_unsigned() ? value->get<uint64_t>() > 0 : value->get<int64_t>() > 0;
  bool fits = value->is_number_unsigned() ? value->get<uint64_t>() <= kMaxInt : value->get<int64_t>() <= kMaxInt;
  if (!positive || !fits) {
    return invalid_argument("field '" + std::string(name) + "' must be a positive 32-bit integer, got " +
                            value->dump());
  }
  return static_cast<int>(value->get<int64_t>());
}

Result<double> read_positive_number(const json& object, std::string_view name, double fallback) {
  const json* value = find_field(object, name);
  if (value == nullptr) return fallback;
  if (!value->is_number()) return wrong_type(name, "a number", *value);
  double number = value->get<double>();
  if (!(number > 0) || !std::isfinite(number)) {
    return invalid_argument("field '" + std::string(name) + "' must be positive and finite, got " + value->dump());
  }
  return number;
}

Result<bool> read_bool(const json& object, std::string_view name, bool fallback) {
  const json* value = find_field(object, name);
  if (value == nullptr) return fallback;
  if (!value->is_boolean()) return wrong_type(name, "true or false", *value);
  return value->get<bool>();
}

Result<std::string> read_string(const json& object, std::string_view name, std::optional<std::string> fallback) {
  const json* value = find_field(object, name);
  if (value == nullptr) {
    if (fallback) return *fallback;
    return invalid_argument("missing required field '" + std::string(name) + "'");
  }
  if (!value->is_string()) return wrong_type(name, "a string", *value);
  return value->get<std::string>();
}

Status check_architecture(const json& root) {
  std::string architectures;
  if (const json* list = find_field(root, "architectures")) {
    if (!list->is_array()) return wrong_type("architectures", "an array of strings", *list);
    for (const json& name : *list) {
      if (!name.is_string()) return wrong_type("architectures[]", "a string", name);
      if (name.get<std::string>() == "Qwen3ForCausalLM") return Status::ok();
      architectures += (architectures.empty() ? "" : ", ") + name.get<std::string>();
    }
  }
  RECGPT_ASSIGN_OR_RETURN(std::string model_type, read_string(root, "model_type", ""));
  if (model_type == "qwen3") return Status::ok();
  return unimplemented("architecture [" + architectures + "] (model_type '" + model_type +
                       "') is not supported; only Qwen3ForCausalLM (model_type 'qwen3') is");
}

// Refuses rope scaling variants; `rope_type` (newer) or `type` (older) other than "default".
Status check_rope_type(const json& root, std::string_view field) {
  const json* rope = find_field(root, field);
  if (rope == nullptr) return Status::ok();
  if (!rope->is_object()) return wrong_type(field, "an object", *rope);
  for (std::string_view key : {"rope_type", "type"}) {
    RECGPT_ASSIGN_OR_RETURN(std::string type, read_string(*rope, key, "default"));
    if (type != "default")
      return unimplemented("rope scaling type '" + type + "' (" + std::string(field) + ") not supported");
  }
  return Status::ok();
}

Result<double> read_rope_theta(const json& root) {
  RECGPT_RETURN_IF_ERROR(check_rope_type(root, "rope_scaling"));
  RECGPT_RETURN_IF_ERROR(check_rope_type(root, "rope_parameters"));
  if (find_field(root, "rope_theta") != nullptr) return read_positive_number(root, "rope_theta", 0);
  if (const json* parameters = find_field(root, "rope_parameters")) {
    return read_positive_number(*parameters, "rope_theta", 10000.0);
  }
  return 10000.0;
}

Status check_unsupported_features(const json& root) {
  for (std::string_view flag : {"use_sliding_window", "attention_bias", "mlp_bias"}) {
    RECGPT_ASSIGN_OR_RETURN(bool enabled, read_bool(root, flag, false));
    if (enabled) return unimplemented(std::string(flag) + "=true is not supported");
  }
  if (const json* layer_types = find_field(root, "layer_types")) {
    if (!layer_types->is_array()) return wrong_type("layer_types", "an array of strings", *layer_types);
    for (const json& type : *layer_types) {
      if (!type.is_string()) return wrong_type("layer_types[]", "a string", type);
      if (type.get<std::string>() != "full_attention") {
        return unimplemented("layer type '" + type.get<std::string>() + "' is not supported (only full_attention)");
      }
    }
  }
  if (const json* quantization = find_field(root, "quantization_config")) {
    std::string method = quantization->is_object() ? quantization->value("quant_method", std::string("?")) : "?";
    return unimplemented("quantized checkpoints (quant_method '" + method + "') are not supported");
  }
  return Status::ok();
}

Result<DType> read_torch_dtype(const json& root) {
  std::string_view field = find_field(root, "torch_dtype") != nullptr ? "torch_dtype" : "dtype";
  RECGPT_ASSIGN_OR_RETURN(std::string name, read_string(root, field, "float32"));
  std::optional<DType> dtype = dtype_from_torch_name(name);
  if (!dtype) {
    return unimplemented(std::string(field) + " '" + name + "' is not supported (float32, bfloat16, float16)");
  }
  return *dtype;
}

bool is_supported_adaptor_activation(std::string_view name) {
  return name == "gelu" || name == "gelu_pytorch_tanh" || name == "silu" || name == "relu";
}

Result<std::optional<EntityAdaptorConfig>> read_entity_adaptor(const json& root, int vocab_size) {
  const json* adaptor = find_field(root, "entity_adaptor");
  const json* token_id = find_field(root, "entity_token_id");
  if (adaptor == nullptr) {
    if (token_id != nullptr) return invalid_argument("field 'entity_token_id' is set but 'entity_adaptor' is not");
    return std::optional<EntityAdaptorConfig>();
  }
  if (!adaptor->is_object()) return wrong_type("entity_adaptor", "an object", *adaptor);
  if (token_id == nullptr) return invalid_argument("missing required field 'entity_token_id' (entity_adaptor is set)");
  if (!token_id->is_number_integer()) return wrong_type("entity_token_id", "an integer", *token_id);
  bool in_vocab = token_id->is_number_unsigned()
                      ? token_id->get<uint64_t>() < static_cast<uint64_t>(vocab_size)
                      : token_id->get<int64_t>() >= 0 && token_id->get<int64_t>() < vocab_size;
  if (!in_vocab) {
    return invalid_argument("field 'entity_token_id' must be in [0, vocab_size=" + std::to_string(vocab_size) +
                            "), got " + token_id->dump());
  }
  EntityAdaptorConfig config;
  config.entity_token_id = static_cast<int32_t>(token_id->get<int64_t>());
  RECGPT_ASSIGN_OR_RETURN(config.entity_dim, read_positive_int(*adaptor, "entity_dim"));
  RECGPT_ASSIGN_OR_RETURN(config.hidden_dim, read_positive_int(*adaptor, "hidden_dim"));
  RECGPT_ASSIGN_OR_RETURN(config.activation, read_string(*adaptor, "activation", std::nullopt));
  if (!is_supported_adaptor_activation(config.activation)) {
    return unimplemented("entity_adaptor.activation '" + config.activation +
                         "' is not supported (gelu, gelu_pytorch_tanh, silu, relu)");
  }
  return std::optional<EntityAdaptorConfig>(std::move(config));
}

Status check_consistency(const ModelConfig& config) {
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return invalid_argument("num_attention_heads (" + std::to_string(config.num_attention_heads) +
                            ") must be a multiple of num_key_value_heads (" +
                            std::to_string(config.num_key_value_heads) + ")");
  }
  if (config.head_dim % 2 != 0) {
    return invalid_argument("head_dim must be even for rotary embeddings, got " + std::to_string(config.head_dim));
  }
  return Status::ok();
}

Result<ModelConfig> read_model_config(const json& root) {
  if (!root.is_object()) return invalid_argument(std::string("config must be a JSON object, got ") + root.type_name());
  RECGPT_RETURN_IF_ERROR(check_architecture(root));
  RECGPT_RETURN_IF_ERROR(check_unsupported_features(root));
  ModelConfig config;
  RECGPT_ASSIGN_OR_RETURN(config.hidden_size, read_positive_int(root, "hidden_size"));
  RECGPT_ASSIGN_OR_RETURN(config.intermediate_size, read_positive_int(root, "intermediate_size"));
  RECGPT_ASSIGN_OR_RETURN(config.num_hidden_layers, read_positive_int(root, "num_hidden_layers"));
  RECGPT_ASSIGN_OR_RETURN(config.num_attention_heads, read_positive_int(root, "num_attention_heads"));
  RECGPT_ASSIGN_OR_RETURN(config.num_key_value_heads,
                          read_positive_int(root, "num_key_value_heads", config.num_attention_heads));
  if (find_field(root, "head_dim") == nullptr && config.hidden_size % config.num_attention_heads != 0) {
    return invalid_argument("head_dim is absent and hidden_size is not a multiple of num_attention_heads");
  }
  RECGPT_ASSIGN_OR_RETURN(config.head_dim,
                          read_positive_int(root, "head_dim", config.hidden_size / config.num_attention_heads));
  RECGPT_ASSIGN_OR_RETURN(config.vocab_size, read_positive_int(root, "vocab_size"));
  RECGPT_ASSIGN_OR_RETURN(double epsilon, read_positive_number(root, "rms_norm_eps", 1e-6));
  config.rms_norm_eps = static_cast<float>(epsilon);
  if (!(config.rms_norm_eps > 0) || !std::isfinite(config.rms_norm_eps)) {
    return invalid_argument("field 'rms_norm_eps' is outside the float32 range, got " + std::to_string(epsilon));
  }
  RECGPT_ASSIGN_OR_RETURN(config.rope_theta, read_rope_theta(root));
  RECGPT_ASSIGN_OR_RETURN(config.tie_word_embeddings, read_bool(root, "tie_word_embeddings", false));
  RECGPT_ASSIGN_OR_RETURN(config.hidden_act, read_string(root, "hidden_act", "silu"));
  if (config.hidden_act != "silu") {
    return unimplemented("hidden_act '" + config.hidden_act + "' is not supported (the Qwen3 MLP needs silu)");
  }
  RECGPT_ASSIGN_OR_RETURN(config.torch_dtype, read_torch_dtype(root));
  RECGPT_ASSIGN_OR_RETURN(config.max_position_embeddings, read_positive_int(root, "max_position_embeddings", 32768));
  RECGPT_ASSIGN_OR_RETURN(config.entity_adaptor, read_entity_adaptor(root, config.vocab_size));
  RECGPT_RETURN_IF_ERROR(check_consistency(config));
  return config;
}

// The shortest decimal that reads back as `value` ("1e-06", not 9.99999997e-07).
double shortest_decimal(float value) {
  char text[32];
  auto [end, error] = std::to_chars(text, text + sizeof(text) - 1, value);
  if (error != std::errc()) return value;
  *end = '\0';
  return std::strtod(text, nullptr);
}

}  // namespace

Result<ModelConfig> parse_model_config(std::string_view json_text) {
  try {
    json root = json::parse(json_text);
    return read_model_config(root);
  } catch (const json::parse_error& error) {
    return data_loss("config is not valid JSON at byte " + std::to_string(error.byte) + ": " + error.what());
  } catch (const json::exception& error) {
    return invalid_argument(std::string("config: ") + error.what());
  }
}

std::string model_config_to_json(const ModelConfig& config) {
  json root = {
      {"architectures", {"Qwen3ForCausalLM"}},
      {"model_type", "qwen3"},
      {"hidden_size", config.hidden_size},
      {"intermediate_size", config.intermediate_size},
      {"num_hidden_layers", config.num_hidden_layers},
      {"num_attention_heads", config.num_attention_heads},
      {"num_key_value_heads", config.num_key_value_heads},
      {"head_dim", config.head_dim},
      {"vocab_size", config.vocab_size},
      {"rms_norm_eps", shortest_decimal(config.rms_norm_eps)},
      {"rope_theta", config.rope_theta},
      {"rope_scaling", nullptr},
      {"tie_word_embeddings", config.tie_word_embeddings},
      {"hidden_act", config.hidden_act},
      {"torch_dtype", torch_dtype_name(config.torch_dtype)},
      {"max_position_embeddings", config.max_position_embeddings},
      {"attention_bias", false},
      {"use_sliding_window", false},
  };
  if (config.entity_adaptor) {
    const EntityAdaptorConfig& adaptor = *config.entity_adaptor;
    root["entity_token_id"] = adaptor.entity_token_id;
    root["entity_adaptor"] = {
        {"entity_dim", adaptor.entity_dim}, {"hidden_dim", adaptor.hidden_dim}, {"activation", adaptor.activation}};
  }
  return root.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace recgpt
