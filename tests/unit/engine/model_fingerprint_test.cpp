// The model fingerprint of the nodes' handshake: the same model gives the same one wherever it lies; another
// seed (same shapes, other weights) or another dtype gives another.
#include "engine/model_fingerprint.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "engine/model_files.h"
#include "engine/model_maker.h"

namespace recgpt {
namespace {

std::string fingerprint_of(const std::string& name, uint64_t seed, DType dtype) {
  const auto dir = std::filesystem::temp_directory_path() / ("recgpt_fp_" + std::to_string(::getpid()) + "_" + name);
  REQUIRE(make_model({"tiny", seed, dtype, dir.string()}).is_ok());
  auto model = ModelFiles::open(dir.string());
  REQUIRE(model.is_ok());
  auto fingerprint = model_fingerprint(**model);
  std::filesystem::remove_all(dir);
  REQUIRE(fingerprint.is_ok());
  CHECK(fingerprint->size() == 16);
  return *fingerprint;
}

TEST_CASE("the model fingerprint follows the weights and config, not the folder", "[engine][fingerprint]") {
  const std::string first = fingerprint_of("a", 1, DType::kF32);
  CHECK(fingerprint_of("b", 1, DType::kF32) == first);
  CHECK(fingerprint_of("c", 2, DType::kF32) != first);
  CHECK(fingerprint_of("d", 1, DType::kBF16) != first);
}

}  // namespace
}  // namespace recgpt
