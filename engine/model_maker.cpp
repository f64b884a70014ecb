#include "engine/model_maker.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <list>

#include "engine/block_hash.h"
#include "engine/bpe_trainer.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"

namespace recgpt {
namespace {

constexpr int kTokenizerVocabSize = 4096;
const std::vector<std::string> kSpecialTokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|entity|>"};

struct Preset {
  const char* name;
  int hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;  // vocab 0: the tokenizer's size
  int entity_dim, adaptor_hidden;
  int max_positions;
};

constexpr Preset kPresets[] = {
    {"tiny", 64, 128, 2, 4, 2, 16, 0, 32, 64, 4096},
    {"small", 256, 768, 4, 8, 4, 32, 0, 64, 256, 8192},
    // Qwen3-0.6B's exact shapes, for speed measurements.
    {"qwen3-0.6b", 1024, 3072, 28, 16, 8, 128, 151936, 1024, 1024, 40960},
};

// Deterministic normal samples: SplitMix64 feeding Box-Muller.
class NormalGenerator {
 public:
  explicit NormalGenerator(uint64_t seed) : state_(seed) {}

  float next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = (static_cast<double>(next_bits() >> 11) + 0.5) * 0x1.0p-53;
    double u2 = static_cast<double>(next_bits() >> 11) * 0x1.0p-53;
    double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(radius * std::sin(2.0 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(radius * std::cos(2.0 * M_PI * u2));
  }

 private:
  uint64_t next_bits() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  uint64_t state_;
  float spare_ = 0;
  bool has_spare_ = false;
};

// Tensors are generated one at a time into owned buffers, then written in one file.
class TensorWriter {
 public:
  TensorWriter(uint64_t seed, DType dtype) : seed_(seed), dtype_(dtype) {}

  // Values mean + stddev * N(0, 1), seeded by (seed, name) so each tensor is independent of the others.
  void add(const std::string& name, std::vector<int64_t> shape, float mean, float stddev) {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    NormalGenerator normal(seed_ ^ xxhash64(name));
    std::vector<std::byte>& bytes = buffers_.emplace_back(static_cast<size_t>(count) * dtype_size(dtype_));
    for (int64_t i = 0; i < count; ++i) {
      float value = mean + stddev * normal.next();
      if (dtype_ == DType::kF32) {
        std::memcpy(bytes.data() + i * 4, &value, 4);
      } else {
        uint16_t half = f32_to_bf16(value);
        std::memcpy(bytes.data() + i * 2, &half, 2);
      }
    }
    tensors_.push_back({name, dtype_, std::move(shape), bytes});
  }

  Status write(const std::string& path) { return write_safetensors(path, tensors_); }

 private:
  uint64_t seed_;
  DType dtype_;
  std::list<std::vector<std::byte>> buffers_;  // stable addresses for the tensors' byte spans
  std::vector<SafetensorsTensor> tensors_;
};

const Preset* find_preset(std::string_view name) {
  for (const Preset& preset : kPresets) {
    if (name == preset.name) return &preset;
  }
  return nullptr;
}

// Linear weights N(0, 1/fan_in) keep activations O(1) through the random network; norm weights near 1.
void add_model_tensors(TensorWriter& writer, const ModelConfig& config) {
  int64_t hidden = config.hidden_size;
  int64_t q_width = static_cast<int64_t>(config.num_attention_heads) * config.head_dim;
  int64_t kv_width = static_cast<int64_t>(config.num_key_value_heads) * config.head_dim;
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    writer.add(name, {out, in}, 0.0f, 1.0f / std::sqrt(static_cast<float>(in)));
  };
  auto norm = [&](const std::string& name, int64_t size) { writer.add(name, {size}, 1.0f, 0.1f); };
  writer.add("model.embed_tokens.weight", {config.vocab_size, hidden}, 0.0f, 1.0f);
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
    std::string prefix = "model.layers." + std::to_string(layer) + ".";
    linear(prefix + "self_attn.q_proj.weight", q_width, hidden);
    linear(prefix + "self_attn.k_proj.weight", kv_width, hidden);
    linear(prefix + "self_attn.v_proj.weight", kv_width, hidden);
    linear(prefix + "self_attn.o_proj.weight", hidden, q_width);
    norm(prefix + "self_attn.q_norm.weight", config.head_dim);
    norm(prefix + "self_attn.k_norm.weight", config.head_dim);
    norm(prefix + "input_layernorm.weight", hidden);
    norm(prefix + "post_attention_layernorm.weight", hidden);
    linear(prefix + "mlp.gate_proj.weight", config.intermediate_size, hidden);
    linear(prefix + "mlp.up_proj.weight", config.intermediate_size, hidden);
    linear(prefix + "mlp.down_proj.weight", hidden, config.intermediate_size);
  }
  norm("model.norm.weight", hidden);
  if (!config.tie_word_embeddings) linear("lm_head.weight", config.vocab_size, hidden);
  const EntityAdaptorConfig& adaptor = *config.entity_adaptor;
  linear("adaptor.fc1.weight", adaptor.hidden_dim, adaptor.entity_dim);
  writer.add("adaptor.fc1.bias", {adaptor.hidden_dim}, 0.0f, 0.1f);
  linear("adaptor.fc2.weight", hidden, adaptor.hidden_dim);
  writer.add("adaptor.fc2.bias", {hidden}, 0.0f, 0.1f);
}

Status write_text(const std::filesystem::path& path, std::string_view text) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(text.data(), static_cast<std::streamsize>(text.size()));
  stream.close();
  if (!stream) return io_error("cannot write '" + path.string() + "'");
  return Status::ok();
}

}  // namespace

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const Preset& preset : kPresets) names.emplace_back(preset.name);
  return names;
}

Result<ModelConfig> model_preset(std::string_view name) {
  const Preset* preset = find_preset(name);
  if (preset == nullptr) return invalid_argument("unknown model preset '" + std::string(name) + "'");
  ModelConfig config;
  config.hidden_size = preset->hidden;
  config.intermediate_size = preset->intermediate;
  config.num_hidden_layers = preset->layers;
  config.num_attention_heads = preset->heads;
  config.num_key_value_heads = preset->kv_heads;
  config.head_dim = preset->head_dim;
  config.vocab_size = preset->vocab;
  config.rms_norm_eps = 1e-6f;
  config.rope_theta = 1000000.0;
  config.tie_word_embeddings = true;
  config.hidden_act = "silu";
  config.max_position_embeddings = preset->max_positions;
  config.entity_adaptor = EntityAdaptorConfig{0, preset->entity_dim, preset->adaptor_hidden, "gelu"};
  return config;
}

Status make_model(const MakeModelOptions& options) {
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16) {
    return invalid_argument("make-model writes f32 or bf16 weights");
  }
  RECGPT_ASSIGN_OR_RETURN(ModelConfig config, model_preset(options.preset));
  RECGPT_ASSIGN_OR_RETURN(std::string tokenizer_json,
                          train_byte_level_bpe(builtin_tokenizer_corpus(), kTokenizerVocabSize, kSpecialTokens));
  RECGPT_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::from_json(tokenizer_json));
  std::optional<int32_t> entity_token = tokenizer.token_to_id("<|entity|>");
  RECGPT_CHECK(entity_token.has_value());
  if (config.vocab_size == 0) config.vocab_size = tokenizer.vocab_size();
  config.entity_adaptor->entity_token_id = *entity_token;
  config.torch_dtype = options.dtype;

  std::error_code error;
  std::filesystem::path dir(options.out_dir);
  std::filesystem::create_directories(dir, error);
  if (error) return io_error("cannot create '" + options.out_dir + "': " + error.message());
  TensorWriter writer(options.seed, options.dtype);
  add_model_tensors(writer, config);
  RECGPT_RETURN_IF_ERROR(writer.write((dir / "model.safetensors").string()));
  RECGPT_RETURN_IF_ERROR(write_text(dir / "tokenizer.json", tokenizer_json));
  return write_text(dir / "config.json", model_config_to_json(config));
}

}  // namespace recgpt
