#include "tests/unit/engine/random_models.h"

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <random>

#include "engine/model_maker.h"

namespace recgpt::testing {

const ModelFiles& random_model(const std::string& preset, DType dtype, uint64_t seed) {
  static std::map<std::string, std::unique_ptr<ModelFiles>> models;
  const std::string key = preset + "_" + std::string(dtype_name(dtype)) + "_" + std::to_string(seed);
  std::unique_ptr<ModelFiles>& model = models[key];
  if (!model) {
    auto dir = std::filesystem::temp_directory_path() / ("recgpt_model_" + std::to_string(::getpid()) + "_" + key);
    REQUIRE(make_model({preset, seed, dtype, dir.string()}).is_ok());
    auto opened = ModelFiles::open(dir.string());
    REQUIRE(opened.is_ok());
    model = std::move(opened).value();
    std::filesystem::remove_all(dir);
  }
  return *model;
}

std::vector<int32_t> random_tokens(const ModelConfig& config, int count, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int32_t> pick(0, config.vocab_size - 1);
  std::vector<int32_t> tokens(count);
  for (int32_t& token : tokens) {
    do token = pick(random);
    while (config.entity_adaptor && token == config.entity_adaptor->entity_token_id);
  }
  return tokens;
}

double relative_difference(std::span<const float> actual, std::span<const float> expected) {
  REQUIRE(actual.size() == expected.size());
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!std::isfinite(actual[i])) return INFINITY;
    worst = std::max(worst, std::fabs(static_cast<double>(actual[i]) - expected[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(expected[i])));
  }
  return worst / scale;
}

}  // namespace recgpt::testing
