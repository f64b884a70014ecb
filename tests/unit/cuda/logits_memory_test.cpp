// The CUDA backend's logits memory (Backend::logits_memory): page-locked host memory, which the GPU writes at the
// bus's rate. The backend tests (unit/engine/cuda_backend_test.cpp) run every step into it.
#include <catch2/catch.hpp>
#include <vector>

#include "engine/backend.h"
#include "tests/unit/cuda/skip_without_gpu.h"
#include "tests/unit/engine/random_models.h"

namespace recgpt {
namespace {

TEST_CASE("the CUDA backend names page-locked host memory for its logits", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  auto backend = create_backend("cuda", testing::random_model("tiny", DType::kBF16, 11), {});
  REQUIRE(backend.is_ok());
  HostLogits logits((*backend)->logits_memory());
  logits.resize(151936 * 4);  // four rows of Qwen3's vocabulary
  std::vector<float> pageable(logits.size());
  cudaPointerAttributes locked{}, unlocked{};
  REQUIRE(cudaPointerGetAttributes(&locked, logits.data()) == cudaSuccess);
  REQUIRE(cudaPointerGetAttributes(&unlocked, pageable.data()) == cudaSuccess);
  CHECK(locked.type == cudaMemoryTypeHost);
  CHECK(unlocked.type == cudaMemoryTypeUnregistered);  // the query tells the two apart
  logits.resize(logits.size() * 2);                    // grown into a new allocation, locked too
  REQUIRE(cudaPointerGetAttributes(&locked, logits.data()) == cudaSuccess);
  CHECK(locked.type == cudaMemoryTypeHost);
}

}  // namespace
}  // namespace recgpt
