#include "engine/model_files.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

namespace recgpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Tensor name -> its entry in one of the opened files. Entries live in each SafetensorsFile's heap-allocated
// vector, so the pointers survive the files vector growing.
using TensorIndex = std::map<std::string, const SafetensorsEntry*, std::less<>>;

bool is_file(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);
}

Result<SafetensorsFile> open_existing(const fs::path& path, std::string_view listed_in) {
  if (!is_file(path))
    return not_found("shard '" + path.string() + "' listed in '" + std::string(listed_in) + "' does not exist");
  return SafetensorsFile::open(path.string());
}

// A shard name from an index: a plain file name beside the index, never a path out of the folder.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// The index's weight_map: tensor name -> shard file name.
Result<std::map<std::string, std::string>> read_weight_map(const std::string& index_path) {
  RECGPT_ASSIGN_OR_RETURN(std::string text, read_text_file(index_path));
  std::map<std::string, std::string> weight_map;
  try {
    json index = json::parse(text);
    auto it = index.is_object() ? index.find("weight_map") : index.end();
    if (it == index.end() || !it->is_object()) return data_loss(index_path + ": missing object 'weight_map'");
    for (const auto& [tensor, shard] : it->items()) {
      if (!shard.is_string() || !is_plain_file_name(shard.get<std::string>())) {
        std::string shown = shard.is_string() ? shard.get<std::string>() : std::string("a ") + shard.type_name();
        return data_loss(index_path + ": weight_map entry of '" + tensor + "' is " + shown + ", not a shard file name");
      }
      weight_map[tensor] = shard.get<std::string>();
    }
  } catch (const json::parse_error& error) {
    return data_loss(index_path + ": not valid JSON at byte " + std::to_string(error.byte) + ": " + error.what());
  } catch (const json::exception& error) {
    return data_loss(index_path + ": " + error.what());
  }
  return weight_map;
}

// Opens the shards an index names, then checks that each tensor is in the shard the index says.
Status open_sharded(const fs::path& dir, std::vector<SafetensorsFile>& files, TensorIndex& index) {
  std::string index_path = (dir / "model.safetensors.index.json").string();
  RECGPT_ASSIGN_OR_RETURN(auto weight_map, read_weight_map(index_path));
  std::map<std::string, size_t> shard_numbers;
  for (const auto& [tensor, shard] : weight_map) {
    if (shard_numbers.count(shard) != 0) continue;
    RECGPT_ASSIGN_OR_RETURN(SafetensorsFile file, open_existing(dir / shard, index_path));
    shard_numbers[shard] = files.size();
    files.push_back(std::move(file));
  }
  for (const auto& [tensor, shard] : weight_map) {
    const SafetensorsEntry* entry = files[shard_numbers[shard]].find(tensor);
    if (entry == nullptr) {
      return data_loss(index_path + " puts tensor '" + tensor + "' in shard '" + shard + "', which lacks it");
    }
    index[tensor] = entry;
  }
  return Status::ok();
}

Status index_whole_file(const SafetensorsFile& file, TensorIndex& index) {
  for (const SafetensorsEntry& entry : file.entries()) {
    if (!index.emplace(entry.name, &entry).second) {
      return data_loss("tensor '" + entry.name + "' of '" + file.path() + "' is also in the model weights");
    }
  }
  return Status::ok();
}

Status open_weight_files(const fs::path& dir, std::vector<SafetensorsFile>& files, TensorIndex& index) {
  if (is_file(dir / "model.safetensors")) {
    RECGPT_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open((dir / "model.safetensors").string()));
    files.push_back(std::move(file));
    RECGPT_RETURN_IF_ERROR(index_whole_file(files.back(), index));
  } else if (is_file(dir / "model.safetensors.index.json")) {
    RECGPT_RETURN_IF_ERROR(open_sharded(dir, files, index));
  } else {
    return not_found("no model.safetensors or model.safetensors.index.json in '" + dir.string() + "'");
  }
  if (is_file(dir / "adaptor.safetensors")) {
    RECGPT_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open((dir / "adaptor.safetensors").string()));
    files.push_back(std::move(file));
    RECGPT_RETURN_IF_ERROR(index_whole_file(files.back(), index));
  }
  return Status::ok();
}

// Turns named entries into checked TensorViews, converting F16 and realigning as model_files.h describes.
class WeightsBuilder {
 public:
  WeightsBuilder(std::string dir, const TensorIndex& index) : dir_(std::move(dir)), index_(index) {}

  Result<TensorView> take(const std::string& name, std::vector<int64_t> expected_shape) {
    auto it = index_.find(name);
    if (it == index_.end()) return not_found("tensor '" + name + "' missing in '" + dir_ + "'");
    const SafetensorsEntry& entry = *it->second;
    if (entry.shape != expected_shape) {
      return data_loss("tensor '" + name + "' has shape " + shape_to_string(entry.shape) + ", expected " +
                       shape_to_string(expected_shape));
    }
    TensorView view{entry.dtype, std::move(expected_shape), entry.bytes.data()};
    if (entry.dtype == DType::kF16) {
      view = converted_to_f32(entry);
    } else if (reinterpret_cast<uintptr_t>(view.data) % dtype_size(view.dtype) != 0) {
      view.data = owned_copy(entry.bytes.data(), entry.bytes.size());
    }
    bytes_ += view.num_bytes();
    return view;
  }

  size_t bytes() const { return bytes_; }
  std::vector<std::unique_ptr<std::byte[]>> release_buffers() { return std::move(buffers_); }

 private:
  TensorView converted_to_f32(const SafetensorsEntry& entry) {
    TensorView view{DType::kF32, entry.shape, nullptr};
    size_t count = entry.bytes.size() / 2;
    std::byte* buffer = allocate(count * sizeof(float));
    for (size_t i = 0; i < count; ++i) {
      uint16_t half;
      std::memcpy(&half, entry.bytes.data() + 2 * i, sizeof(half));
      float value = f16_to_f32(half);
      std::memcpy(buffer + sizeof(float) * i, &value, sizeof(value));
    }
    view.data = buffer;
    return view;
  }

  const std::byte* owned_copy(const std::byte* data, size_t size) {
    std::byte* buffer = allocate(size);
    std::memcpy(buffer, data, size);
    return buffer;
  }

  // operator new[] memory is aligned for any scalar type.
  std::byte* allocate(size_t size) {
    buffers_.push_back(std::make_unique<std::byte[]>(size));
    return buffers_.back().get();
  }

  std::string dir_;
  const TensorIndex& index_;
  std::vector<std::unique_ptr<std::byte[]>> buffers_;
  size_t bytes_ = 0;
};

Result<LayerWeights> take_layer(WeightsBuilder& builder, const ModelConfig& config, int layer) {
  const int64_t hidden = config.hidden_size;
  const int64_t q = static_cast<int64_t>(config.num_attention_heads) * config.head_dim;
  const int64_t kv = static_cast<int64_t>(config.num_key_value_heads) * config.head_dim;
  const int64_t intermediate = config.intermediate_size;
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  LayerWeights weights;
  RECGPT_ASSIGN_OR_RETURN(weights.q_proj, builder.take(prefix + "self_attn.q_proj.weight", {q, hidden}));
  RECGPT_ASSIGN_OR_RETURN(weights.k_proj, builder.take(prefix + "self_attn.k_proj.weight", {kv, hidden}));
  RECGPT_ASSIGN_OR_RETURN(weights.v_proj, builder.take(prefix + "self_attn.v_proj.weight", {kv, hidden}));
  RECGPT_ASSIGN_OR_RETURN(weights.o_proj, builder.take(prefix + "self_attn.o_proj.weight", {hidden, q}));
  RECGPT_ASSIGN_OR_RETURN(weights.q_norm, builder.take(prefix + "self_attn.q_norm.weight", {config.head_dim}));
  RECGPT_ASSIGN_OR_RETURN(weights.k_norm, builder.take(prefix + "self_attn.k_norm.weight", {config.head_dim}));
  RECGPT_ASSIGN_OR_RETURN(weights.input_layernorm, builder.take(prefix + "input_layernorm.weight", {hidden}));
  RECGPT_ASSIGN_OR_RETURN(weights.post_attention_layernorm,
                          builder.take(prefix + "post_attention_layernorm.weight", {hidden}));
  RECGPT_ASSIGN_OR_RETURN(weights.gate_proj, builder.take(prefix + "mlp.gate_proj.weight", {intermediate, hidden}));
  RECGPT_ASSIGN_OR_RETURN(weights.up_proj, builder.take(prefix + "mlp.up_proj.weight", {intermediate, hidden}));
  RECGPT_ASSIGN_OR_RETURN(weights.down_proj, builder.take(prefix + "mlp.down_proj.weight", {hidden, intermediate}));
  return weights;
}

Result<AdaptorWeights> take_adaptor(WeightsBuilder& builder, const ModelConfig& config) {
  const EntityAdaptorConfig& adaptor = *config.entity_adaptor;
  AdaptorWeights weights;
  RECGPT_ASSIGN_OR_RETURN(weights.fc1_weight,
                          builder.take("adaptor.fc1.weight", {adaptor.hidden_dim, adaptor.entity_dim}));
  RECGPT_ASSIGN_OR_RETURN(weights.fc1_bias, builder.take("adaptor.fc1.bias", {adaptor.hidden_dim}));
  RECGPT_ASSIGN_OR_RETURN(weights.fc2_weight,
                          builder.take("adaptor.fc2.weight", {config.hidden_size, adaptor.hidden_dim}));
  RECGPT_ASSIGN_OR_RETURN(weights.fc2_bias, builder.take("adaptor.fc2.bias", {config.hidden_size}));
  return weights;
}

Result<ModelWeights> take_weights(WeightsBuilder& builder, const ModelConfig& config) {
  ModelWeights weights;
  RECGPT_ASSIGN_OR_RETURN(weights.embed_tokens,
                          builder.take("model.embed_tokens.weight", {config.vocab_size, config.hidden_size}));
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
    RECGPT_ASSIGN_OR_RETURN(LayerWeights layer_weights, take_layer(builder, config, layer));
    weights.layers.push_back(std::move(layer_weights));
  }
  RECGPT_ASSIGN_OR_RETURN(weights.norm, builder.take("model.norm.weight", {config.hidden_size}));
  if (config.tie_word_embeddings) {
    weights.lm_head = weights.embed_tokens;
  } else {
    RECGPT_ASSIGN_OR_RETURN(weights.lm_head, builder.take("lm_head.weight", {config.vocab_size, config.hidden_size}));
  }
  if (config.entity_adaptor) {
    RECGPT_ASSIGN_OR_RETURN(AdaptorWeights adaptor, take_adaptor(builder, config));
    weights.adaptor = std::move(adaptor);
  }
  return weights;
}

}  // namespace

Result<std::unique_ptr<ModelFiles>> ModelFiles::open(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) return not_found("model folder '" + dir + "' does not exist");
  std::unique_ptr<ModelFiles> files(new ModelFiles());
  files->dir_ = dir;
  std::string config_path = (fs::path(dir) / "config.json").string();
  if (!is_file(config_path)) return not_found("no config.json in '" + dir + "'");
  RECGPT_ASSIGN_OR_RETURN(std::string config_text, read_text_file(config_path));
  Result<ModelConfig> config = parse_model_config(config_text);
  if (!config.is_ok()) return config.status().with_context(config_path);
  files->config_ = std::move(config).value();

  TensorIndex index;
  RECGPT_RETURN_IF_ERROR(open_weight_files(dir, files->files_, index));
  WeightsBuilder builder(dir, index);
  RECGPT_ASSIGN_OR_RETURN(files->weights_, take_weights(builder, files->config_));
  files->weight_bytes_ = builder.bytes();
  files->buffers_ = builder.release_buffers();
  return files;
}

std::string ModelFiles::tokenizer_path() const { return (fs::path(dir_) / "tokenizer.json").string(); }

void ModelFiles::release_resident_pages(std::span<const std::byte> bytes) const {
  const auto begin = reinterpret_cast<uintptr_t>(bytes.data());
  const uintptr_t end = begin + bytes.size();
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  for (const SafetensorsFile& file : files_) {
    const auto file_begin = reinterpret_cast<uintptr_t>(file.bytes().data());
    if (begin < file_begin || end > file_begin + file.bytes().size()) continue;
    // Whole pages: the mapping covers the file's last page in full, so rounding `end` up stays inside it.
    const uintptr_t first = begin & ~(page - 1), last = (end + page - 1) & ~(page - 1);
    (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);  // best effort
    return;
  }
}

}  // namespace recgpt
