#include "engine/model_config.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/unit/engine/tiny_model_folder.h"

namespace recgpt {
namespace {

// Qwen3-0.6B's config.json as published.
constexpr std::string_view kQwen3Config = R"({
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// kQwen3Config with `patch` merged in (a null value removes the field).
std::string patched(const std::string& patch) {
  nlohmann::json config = nlohmann::json::parse(kQwen3Config);
  config.merge_patch(nlohmann::json::parse(patch));
  return config.dump();
}

Status parse_status(const std::string& text) { return parse_model_config(text).status(); }

TEST_CASE("the published Qwen3-0.6B config parses with its values") {
  auto config = parse_model_config(kQwen3Config);
  REQUIRE(config.is_ok());
  CHECK(config->hidden_size == 1024);
  CHECK(config->intermediate_size == 3072);
  CHECK(config->num_hidden_layers == 28);
  CHECK(config->num_attention_heads == 16);
  CHECK(config->num_key_value_heads == 8);
  CHECK(config->head_dim == 128);
  CHECK(config->vocab_size == 151936);
  CHECK(config->rms_norm_eps == 1e-6f);
  CHECK(config->rope_theta == 1000000.0);
  CHECK(config->tie_word_embeddings);
  CHECK(config->hidden_act == "silu");
  CHECK(config->torch_dtype == DType::kBF16);
  CHECK(config->max_position_embeddings == 40960);
  CHECK_FALSE(config->entity_adaptor.has_value());
}

TEST_CASE("a config written by model_config_to_json parses back to the same values") {
  ModelConfig original = testing::tiny_model_config(/*with_adaptor=*/true);
  original.tie_word_embeddings = true;
  original.rms_norm_eps = 1e-5f;
  std::string text = model_config_to_json(original);
  CHECK_THAT(text, Catch::Contains("\"Qwen3ForCausalLM\"") && Catch::Contains("\"rms_norm_eps\": 1e-05"));
  auto parsed = parse_model_config(text);
  REQUIRE(parsed.is_ok());
  CHECK(parsed->hidden_size == original.hidden_size);
  CHECK(parsed->head_dim == original.head_dim);
  CHECK(parsed->num_key_value_heads == original.num_key_value_heads);
  CHECK(parsed->rms_norm_eps == original.rms_norm_eps);
  CHECK(parsed->rope_theta == original.rope_theta);
  CHECK(parsed->tie_word_embeddings);
  CHECK(parsed->torch_dtype == DType::kBF16);
  REQUIRE(parsed->entity_adaptor.has_value());
  CHECK(parsed->entity_adaptor->entity_token_id == 31);
  CHECK(parsed->entity_adaptor->entity_dim == 6);
  CHECK(parsed->entity_adaptor->hidden_dim == 10);
  CHECK(parsed->entity_adaptor->activation == "gelu");
}

TEST_CASE("absent head_dim and num_key_value_heads take their Hugging Face defaults") {
  auto config = parse_model_config(patched(R"({"head_dim": null, "num_key_value_heads": null})"));
  REQUIRE(config.is_ok());
  CHECK(config->head_dim == 1024 / 16);
  CHECK(config->num_key_value_heads == 16);
}

TEST_CASE("the newer rope_parameters and dtype fields are read") {
  auto config = parse_model_config(patched(
      R"({"rope_theta": null, "torch_dtype": null, "dtype": "float16",
          "rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"}})"));
  REQUIRE(config.is_ok());
  CHECK(config->rope_theta == 5000.0);
  CHECK(config->torch_dtype == DType::kF16);
}

TEST_CASE("an architecture other than Qwen3 is unimplemented naming it") {
  Status status = parse_status(patched(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})"));
  CHECK(status.code() == StatusCode::kUnimplemented);
  CHECK_THAT(status.message(), Catch::Contains("LlamaForCausalLM") && Catch::Contains("llama"));
}

TEST_CASE("a missing required field is invalid_argument naming it") {
  Status status = parse_status(patched(R"({"intermediate_size": null})"));
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(status.message(), Catch::Contains("'intermediate_size'"));
}

TEST_CASE("a field of the wrong type or range is invalid_argument naming it") {
  Status status = parse_status(patched(R"({"hidden_size": "1024"})"));
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(status.message(), Catch::Contains("'hidden_size'") && Catch::Contains("string"));
  status = parse_status(patched(R"({"num_hidden_layers": 0})"));
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(status.message(), Catch::Contains("'num_hidden_layers'"));
  CHECK(parse_status(patched(R"({"tie_word_embeddings": "yes"})")).code() == StatusCode::kInvalidArgument);
  CHECK(parse_status(patched(R"({"vocab_size": 1e3})")).code() == StatusCode::kInvalidArgument);
  CHECK(parse_status(patched(R"({"rms_norm_eps": -1})")).code() == StatusCode::kInvalidArgument);
  CHECK(parse_status(patched(R"({"rms_norm_eps": 1e206})")).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("attention heads that are not a multiple of key-value heads are invalid_argument") {
  Status status = parse_status(patched(R"({"num_key_value_heads": 3})"));
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(status.message(), Catch::Contains("num_key_value_heads (3)"));
}

TEST_CASE("features this engine cannot honour are unimplemented naming them") {
  struct Case {
    std::string patch;
    std::string culprit;
  };
  for (const Case& c : {Case{R"({"hidden_act": "gelu"})", "hidden_act 'gelu'"},
                        Case{R"({"use_sliding_window": true})", "use_sliding_window"},
                        Case{R"({"attention_bias": true})", "attention_bias"},
                        Case{R"({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})", "rope scaling type 'yarn'"},
                        Case{R"({"rope_scaling": {"type": "linear"}})", "rope scaling type 'linear'"},
                        Case{R"({"torch_dtype": "float64"})", "float64"},
                        Case{R"({"layer_types": ["full_attention", "sliding_attention"]})", "sliding_attention"},
                        Case{R"({"quantization_config": {"quant_method": "awq"}})", "awq"}}) {
    Status status = parse_status(patched(c.patch));
    INFO(c.patch);
    CHECK(status.code() == StatusCode::kUnimplemented);
    CHECK_THAT(status.message(), Catch::Contains(c.culprit));
  }
}

TEST_CASE("the entity adaptor accepts the supported activations only") {
  for (std::string activation : {"gelu", "gelu_pytorch_tanh", "silu", "relu"}) {
    auto config = parse_model_config(patched(R"({"entity_token_id": 151665, "entity_adaptor": {"entity_dim": 64,
        "hidden_dim": 256, "activation": ")" +
                                             activation + R"("}})"));
    REQUIRE(config.is_ok());
    CHECK(config->entity_adaptor->activation == activation);
  }
  Status status = parse_status(patched(
      R"({"entity_token_id": 5, "entity_adaptor": {"entity_dim": 64, "hidden_dim": 256, "activation": "tanh"}})"));
  CHECK(status.code() == StatusCode::kUnimplemented);
  CHECK_THAT(status.message(), Catch::Contains("'tanh'"));
}

TEST_CASE("an entity token id outside the vocabulary or without an adaptor is invalid_argument") {
  Status status = parse_status(patched(
      R"({"entity_token_id": 151936, "entity_adaptor": {"entity_dim": 4, "hidden_dim": 4, "activation": "relu"}})"));
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(status.message(), Catch::Contains("entity_token_id"));
  CHECK(parse_status(patched(R"({"entity_token_id": 7})")).code() == StatusCode::kInvalidArgument);
  status =
      parse_status(patched(R"({"entity_token_id": 7, "entity_adaptor": {"entity_dim": 4, "activation": "relu"}})"));
  CHECK_THAT(status.message(), Catch::Contains("'hidden_dim'"));
}

TEST_CASE("a config that is not valid JSON is data_loss with the position") {
  Status status = parse_status(R"({"hidden_size": 8,, })");
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("at byte 19"));
  CHECK(parse_status("[1, 2]").code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recgpt
