#include "tests/unit/engine/tiny_model_folder.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace recgpt::testing {
namespace {

std::vector<std::byte> encode(DType dtype, const std::vector<float>& values) {
  std::vector<std::byte> bytes(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    } else {
      uint16_t half = dtype == DType::kBF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &half, 2);
    }
  }
  return bytes;
}

}  // namespace

TemporaryDirectory::TemporaryDirectory() {
  static std::atomic<int> counter{0};
  auto path = std::filesystem::temp_directory_path() /
              ("recgpt_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
  path_ = path.string();
}

TemporaryDirectory::~TemporaryDirectory() {
  std::error_code error;
  std::filesystem::remove_all(path_, error);
}

ModelConfig tiny_model_config(bool with_adaptor) {
  ModelConfig config;
  config.hidden_size = 8;
  config.intermediate_size = 12;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 4;
  config.vocab_size = 32;
  config.rms_norm_eps = 1e-6f;
  config.rope_theta = 1000000.0;
  config.torch_dtype = DType::kBF16;
  config.max_position_embeddings = 128;
  if (with_adaptor) config.entity_adaptor = EntityAdaptorConfig{31, 6, 10, "gelu"};
  return config;
}

float tiny_weight_value(size_t tensor_number, int64_t index) {
  return static_cast<float>((static_cast<int64_t>(tensor_number) * 7 + index) % 17) / 16.0f - 0.5f;
}

std::vector<OwnedTensor> tiny_model_tensors(const ModelConfig& config, DType dtype) {
  const int64_t hidden = config.hidden_size;
  const int64_t q = static_cast<int64_t>(config.num_attention_heads) * config.head_dim;
  const int64_t kv = static_cast<int64_t>(config.num_key_value_heads) * config.head_dim;
  const int64_t intermediate = config.intermediate_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {config.vocab_size, hidden}}, {"model.norm.weight", {hidden}}};
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
    std::string prefix = "model.layers." + std::to_string(layer) + ".";
    shapes.push_back({prefix + "self_attn.q_proj.weight", {q, hidden}});
    shapes.push_back({prefix + "self_attn.k_proj.weight", {kv, hidden}});
    shapes.push_back({prefix + "self_attn.v_proj.weight", {kv, hidden}});
    shapes.push_back({prefix + "self_attn.o_proj.weight", {hidden, q}});
    shapes.push_back({prefix + "self_attn.q_norm.weight", {config.head_dim}});
    shapes.push_back({prefix + "self_attn.k_norm.weight", {config.head_dim}});
    shapes.push_back({prefix + "input_layernorm.weight", {hidden}});
    shapes.push_back({prefix + "post_attention_layernorm.weight", {hidden}});
    shapes.push_back({prefix + "mlp.gate_proj.weight", {intermediate, hidden}});
    shapes.push_back({prefix + "mlp.up_proj.weight", {intermediate, hidden}});
    shapes.push_back({prefix + "mlp.down_proj.weight", {hidden, intermediate}});
  }
  if (!config.tie_word_embeddings) shapes.push_back({"lm_head.weight", {config.vocab_size, hidden}});
  if (config.entity_adaptor) {
    const EntityAdaptorConfig& adaptor = *config.entity_adaptor;
    shapes.push_back({"adaptor.fc1.weight", {adaptor.hidden_dim, adaptor.entity_dim}});
    shapes.push_back({"adaptor.fc1.bias", {adaptor.hidden_dim}});
    shapes.push_back({"adaptor.fc2.weight", {hidden, adaptor.hidden_dim}});
    shapes.push_back({"adaptor.fc2.bias", {hidden}});
  }
  std::vector<OwnedTensor> tensors;
  for (size_t number = 0; number < shapes.size(); ++number) {
    int64_t count = 1;
    for (int64_t dim : shapes[number].second) count *= dim;
    std::vector<float> values(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) values[static_cast<size_t>(i)] = tiny_weight_value(number, i);
    tensors.push_back({shapes[number].first, dtype, shapes[number].second, encode(dtype, values)});
  }
  return tensors;
}

float element_as_float(const OwnedTensor& tensor, int64_t index) {
  const std::byte* element = tensor.bytes.data() + static_cast<size_t>(index) * dtype_size(tensor.dtype);
  if (tensor.dtype == DType::kF32) {
    float value;
    std::memcpy(&value, element, 4);
    return value;
  }
  uint16_t half;
  std::memcpy(&half, element, 2);
  return tensor.dtype == DType::kBF16 ? bf16_to_f32(half) : f16_to_f32(half);
}

Status write_tensors(const std::string& path, std::span<const OwnedTensor> tensors) {
  std::vector<SafetensorsTensor> views;
  for (const OwnedTensor& tensor : tensors) views.push_back(tensor.view());
  return write_safetensors(path, views);
}

Status write_text(const std::string& path, const std::string& text) {
  std::ofstream stream(path, std::ios::binary);
  stream << text;
  return stream.good() ? Status::ok() : io_error("cannot write '" + path + "'");
}

Status write_model_folder(const std::string& dir, const ModelConfig& config, std::span<const OwnedTensor> tensors) {
  RECGPT_RETURN_IF_ERROR(write_text(dir + "/config.json", model_config_to_json(config)));
  return write_tensors(dir + "/model.safetensors", tensors);
}

}  // namespace recgpt::testing
