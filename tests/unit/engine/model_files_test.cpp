#include "engine/model_files.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/unit/engine/tiny_model_folder.h"

namespace recgpt {
namespace {

using testing::OwnedTensor;
using testing::TemporaryDirectory;

std::vector<OwnedTensor> without(std::vector<OwnedTensor> tensors, const std::string& name) {
  std::erase_if(tensors, [&](const OwnedTensor& tensor) { return tensor.name == name; });
  return tensors;
}

const OwnedTensor& named(const std::vector<OwnedTensor>& tensors, const std::string& name) {
  for (const OwnedTensor& tensor : tensors) {
    if (tensor.name == name) return tensor;
  }
  FAIL("no tensor " << name);
  return tensors.front();
}

float view_element(const TensorView& view, int64_t index) {
  OwnedTensor copy{"", view.dtype, view.shape, std::vector<std::byte>(view.num_bytes())};
  std::memcpy(copy.bytes.data(), view.data, view.num_bytes());
  return testing::element_as_float(copy, index);
}

Status open_status(const std::string& dir) { return ModelFiles::open(dir).status(); }

TEST_CASE("a single-file model folder loads with every tensor checked and viewed") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  std::vector<OwnedTensor> tensors = testing::tiny_model_tensors(config, DType::kBF16);
  tensors.push_back({"model.rotary_emb.inv_freq", DType::kF32, {2}, std::vector<std::byte>(8)});  // ignored
  REQUIRE(testing::write_model_folder(dir.path(), config, tensors).is_ok());

  auto files = ModelFiles::open(dir.path());
  REQUIRE(files.is_ok());
  const ModelWeights& weights = (*files)->weights();
  CHECK((*files)->config().hidden_size == 8);
  REQUIRE(weights.layers.size() == 2);
  CHECK(weights.layers[1].q_proj.shape == std::vector<int64_t>{16, 8});
  CHECK(weights.layers[1].k_proj.shape == std::vector<int64_t>{8, 8});
  CHECK(weights.layers[1].o_proj.shape == std::vector<int64_t>{8, 16});
  CHECK(weights.layers[0].q_norm.shape == std::vector<int64_t>{4});
  CHECK(weights.layers[0].down_proj.shape == std::vector<int64_t>{8, 12});
  CHECK(weights.embed_tokens.dtype == DType::kBF16);
  CHECK(weights.lm_head.data != weights.embed_tokens.data);
  CHECK_FALSE(weights.adaptor.has_value());
  const OwnedTensor& up = named(tensors, "model.layers.1.mlp.up_proj.weight");
  for (int64_t i = 0; i < up.shape[0] * up.shape[1]; ++i) {
    CHECK(view_element(weights.layers[1].up_proj, i) == testing::element_as_float(up, i));
  }
  size_t expected_bytes = 0;
  for (const OwnedTensor& tensor : tensors) expected_bytes += tensor.bytes.size();
  CHECK((*files)->weight_bytes() == expected_bytes - 8);
  CHECK((*files)->tokenizer_path() == dir.file("tokenizer.json"));
}

TEST_CASE("tied embeddings make lm_head the same memory as embed_tokens") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  config.tie_word_embeddings = true;
  std::vector<OwnedTensor> tensors = testing::tiny_model_tensors(config, DType::kF32);
  REQUIRE(testing::write_model_folder(dir.path(), config, tensors).is_ok());

  auto files = ModelFiles::open(dir.path());
  REQUIRE(files.is_ok());
  const ModelWeights& weights = (*files)->weights();
  CHECK(weights.lm_head.data == weights.embed_tokens.data);
  CHECK(weights.lm_head.shape == std::vector<int64_t>{32, 8});
}

TEST_CASE("untied embeddings without lm_head.weight is not_found naming it") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  auto tensors = without(testing::tiny_model_tensors(config, DType::kF32), "lm_head.weight");
  REQUIRE(testing::write_model_folder(dir.path(), config, tensors).is_ok());
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kNotFound);
  CHECK_THAT(status.message(), Catch::Contains("'lm_head.weight'") && Catch::Contains(dir.path()));
}

TEST_CASE("a missing layer tensor is not_found naming the tensor and the folder") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  auto tensors = without(testing::tiny_model_tensors(config, DType::kF32), "model.layers.1.mlp.up_proj.weight");
  REQUIRE(testing::write_model_folder(dir.path(), config, tensors).is_ok());
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kNotFound);
  CHECK_THAT(status.message(), Catch::Contains("'model.layers.1.mlp.up_proj.weight'") && Catch::Contains(dir.path()));
}

TEST_CASE("a tensor whose shape disagrees with the config is data_loss naming expected and actual shapes") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  auto tensors = testing::tiny_model_tensors(config, DType::kF32);
  for (OwnedTensor& tensor : tensors) {
    if (tensor.name == "model.layers.0.self_attn.k_proj.weight") tensor.shape = {4, 16};
  }
  REQUIRE(testing::write_model_folder(dir.path(), config, tensors).is_ok());
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("'model.layers.0.self_attn.k_proj.weight'") &&
                                   Catch::Contains("[4, 16]") && Catch::Contains("expected [8, 8]"));
}

TEST_CASE("a truncated model.safetensors is data_loss naming the file") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  REQUIRE(testing::write_model_folder(dir.path(), config, testing::tiny_model_tensors(config, DType::kF32)).is_ok());
  std::string path = dir.file("model.safetensors");
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains(path));
}

TEST_CASE("a folder without config.json or weights is not_found naming what is missing") {
  TemporaryDirectory dir;
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kNotFound);
  CHECK_THAT(status.message(), Catch::Contains("config.json"));
  REQUIRE(testing::write_text(dir.file("config.json"), model_config_to_json(testing::tiny_model_config())).is_ok());
  status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kNotFound);
  CHECK_THAT(status.message(), Catch::Contains("model.safetensors"));
  CHECK(open_status(dir.file("absent")).code() == StatusCode::kNotFound);
}

TEST_CASE("a config.json that is not valid JSON is data_loss naming the file") {
  TemporaryDirectory dir;
  REQUIRE(testing::write_text(dir.file("config.json"), "{\"hidden_size\": ").is_ok());
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains(dir.file("config.json")));
}

// Writes config.json, two shards (layer 1 in the second) and their index.
void write_sharded_folder(const TemporaryDirectory& dir, const ModelConfig& config,
                          const std::vector<OwnedTensor>& tensors) {
  std::vector<OwnedTensor> shards[2];
  nlohmann::json weight_map;
  for (const OwnedTensor& tensor : tensors) {
    int shard = tensor.name.rfind("model.layers.1.", 0) == 0 ? 1 : 0;
    shards[shard].push_back(tensor);
    weight_map[tensor.name] = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
  }
  REQUIRE(testing::write_tensors(dir.file("model-00001-of-00002.safetensors"), shards[0]).is_ok());
  REQUIRE(testing::write_tensors(dir.file("model-00002-of-00002.safetensors"), shards[1]).is_ok());
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  REQUIRE(testing::write_text(dir.file("model.safetensors.index.json"), index.dump(2)).is_ok());
  REQUIRE(testing::write_text(dir.file("config.json"), model_config_to_json(config)).is_ok());
}

TEST_CASE("a sharded folder loads tensors from the shard its index names") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  auto tensors = testing::tiny_model_tensors(config, DType::kBF16);
  write_sharded_folder(dir, config, tensors);
  auto files = ModelFiles::open(dir.path());
  REQUIRE(files.is_ok());
  const OwnedTensor& v_proj = named(tensors, "model.layers.1.self_attn.v_proj.weight");
  CHECK(view_element((*files)->weights().layers[1].v_proj, 5) == testing::element_as_float(v_proj, 5));
}

TEST_CASE("a shard missing from a sharded folder is not_found naming the shard") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  write_sharded_folder(dir, config, testing::tiny_model_tensors(config, DType::kBF16));
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kNotFound);
  CHECK_THAT(status.message(), Catch::Contains("model-00002-of-00002.safetensors"));
}

TEST_CASE("an index that puts a tensor in the wrong shard is data_loss naming both") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  write_sharded_folder(dir, config, testing::tiny_model_tensors(config, DType::kBF16));
  auto index = nlohmann::json::parse(read_text_file(dir.file("model.safetensors.index.json")).value());
  index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
  REQUIRE(testing::write_text(dir.file("model.safetensors.index.json"), index.dump()).is_ok());
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(),
             Catch::Contains("'model.norm.weight'") && Catch::Contains("model-00002-of-00002.safetensors"));
}

TEST_CASE("an index naming a shard outside the folder is data_loss") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  write_sharded_folder(dir, config, testing::tiny_model_tensors(config, DType::kBF16));
  auto index = nlohmann::json::parse(read_text_file(dir.file("model.safetensors.index.json")).value());
  index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  REQUIRE(testing::write_text(dir.file("model.safetensors.index.json"), index.dump()).is_ok());
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("../elsewhere.safetensors"));
}

TEST_CASE("adaptor weights load from adaptor.safetensors beside the model or from the model file") {
  ModelConfig config = testing::tiny_model_config(/*with_adaptor=*/true);
  auto tensors = testing::tiny_model_tensors(config, DType::kF32);
  std::vector<OwnedTensor> model_tensors, adaptor_tensors;
  for (const OwnedTensor& tensor : tensors) {
    (tensor.name.rfind("adaptor.", 0) == 0 ? adaptor_tensors : model_tensors).push_back(tensor);
  }
  REQUIRE(adaptor_tensors.size() == 4);

  TemporaryDirectory separate;
  REQUIRE(testing::write_model_folder(separate.path(), config, model_tensors).is_ok());
  CHECK(open_status(separate.path()).code() == StatusCode::kNotFound);  // adaptor.fc1.weight missing
  REQUIRE(testing::write_tensors(separate.file("adaptor.safetensors"), adaptor_tensors).is_ok());
  auto files = ModelFiles::open(separate.path());
  REQUIRE(files.is_ok());
  REQUIRE((*files)->weights().adaptor.has_value());
  CHECK((*files)->weights().adaptor->fc1_weight.shape == std::vector<int64_t>{10, 6});
  CHECK((*files)->weights().adaptor->fc2_bias.shape == std::vector<int64_t>{8});
  const OwnedTensor& fc2 = named(tensors, "adaptor.fc2.weight");
  CHECK(view_element((*files)->weights().adaptor->fc2_weight, 3) == testing::element_as_float(fc2, 3));

  TemporaryDirectory together;
  REQUIRE(testing::write_model_folder(together.path(), config, tensors).is_ok());
  CHECK(open_status(together.path()).is_ok());
}

TEST_CASE("F16 weights are converted once to owned F32 and other dtypes may be mixed in") {
  TemporaryDirectory dir;
  ModelConfig config = testing::tiny_model_config();
  auto tensors = testing::tiny_model_tensors(config, DType::kF16);
  OwnedTensor f32_norm = testing::tiny_model_tensors(config, DType::kF32)[1];
  REQUIRE(f32_norm.name == "model.norm.weight");
  tensors[1] = f32_norm;
  REQUIRE(testing::write_model_folder(dir.path(), config, tensors).is_ok());

  auto files = ModelFiles::open(dir.path());
  REQUIRE(files.is_ok());
  const ModelWeights& weights = (*files)->weights();
  CHECK(weights.layers[0].gate_proj.dtype == DType::kF32);
  CHECK(weights.norm.dtype == DType::kF32);
  const OwnedTensor& gate = named(tensors, "model.layers.0.mlp.gate_proj.weight");
  for (int64_t i = 0; i < 12 * 8; ++i)
    CHECK(view_element(weights.layers[0].gate_proj, i) == testing::element_as_float(gate, i));
  CHECK(reinterpret_cast<uintptr_t>(weights.layers[0].gate_proj.data) % alignof(float) == 0);
}

TEST_CASE("an unsupported dtype in the weights is unimplemented naming the tensor") {
  TemporaryDirectory dir;
  REQUIRE(testing::write_text(dir.file("config.json"), model_config_to_json(testing::tiny_model_config())).is_ok());
  std::string header = R"({"model.embed_tokens.weight":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})";
  std::string prefix(8, '\0');
  prefix[0] = static_cast<char>(header.size());
  REQUIRE(testing::write_text(dir.file("model.safetensors"), prefix + header + "ab").is_ok());
  Status status = open_status(dir.path());
  CHECK(status.code() == StatusCode::kUnimplemented);
  CHECK_THAT(status.message(), Catch::Contains("'model.embed_tokens.weight'") && Catch::Contains("I8"));
}

}  // namespace
}  // namespace recgpt
