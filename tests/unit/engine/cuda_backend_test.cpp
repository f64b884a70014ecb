// The CUDA backend against the CPU backend on the same random models and the same steps: prompts with and without
// entity vectors, decode steps (replayed CUDA graphs after the first of each shape), mixed batches, contexts long
// enough to split attention, both KV dtypes. Through the Backend face only, so this builds everywhere; without a
// GPU (or a build without CUDA) the comparisons say "SKIPPED:" and ctest counts them as skipped.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <random>

#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"
#include "tests/unit/engine/random_models.h"

namespace recgpt {
namespace {

bool cuda_built() {
  const std::vector<std::string> names = available_backends();
  return std::find(names.begin(), names.end(), "cuda") != names.end();
}

const ModelFiles& random_model(const std::string& preset, DType dtype) {
  return testing::random_model(preset, dtype, 11);
}

// A backend and a cache it made, of `num_blocks` blocks of 16 tokens.
struct Engine {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<KvCache> cache;

  Engine(const std::string& name, const ModelFiles& model, DType kv_dtype, int64_t num_blocks) {
    auto made = create_backend(name, model, {});
    INFO(name << ": " << (made.is_ok() ? "" : made.status().to_string()));
    REQUIRE(made.is_ok());
    backend = std::move(made).value();
    const ModelConfig& config = model.config();
    auto created = backend->create_kv_cache(
        {config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 16, kv_dtype, num_blocks});
    REQUIRE(created.is_ok());
    cache = std::make_unique<KvCache>(std::move(created).value());
  }

  // Into the memory the backend names for logits, as the engine serves (page-locked host memory for CUDA).
  std::vector<float> run(const Batch& batch) {
    HostLogits logits(backend->logits_memory());
    const Status status = backend->forward(batch, *cache, logits);
    INFO(backend->name() << ": " << status.to_string());
    REQUIRE(status.is_ok());
    return {logits.begin(), logits.end()};
  }
};

// The reason the GPU comparisons cannot run here, or empty.
std::string why_no_gpu_run() {
  if (!cuda_built()) return "this build has no CUDA backend";
  auto made = create_backend("cuda", random_model("tiny", DType::kBF16), {});
  return made.is_ok() ? "" : made.status().to_string();
}

#define SKIP_WITHOUT_GPU()                                \
  if (std::string why = why_no_gpu_run(); !why.empty()) { \
    WARN("SKIPPED: " << why);                             \
    return;                                               \
  }

using testing::relative_difference;

constexpr double kTolerance = 2e-2;  // issue 2's bf16 tolerance, of max |logit|

using testing::random_tokens;

int32_t greedy(const std::vector<float>& logits, int64_t row, int vocab) {
  auto begin = logits.begin() + row * vocab;
  return static_cast<int32_t>(std::max_element(begin, begin + vocab) - begin);
}

TEST_CASE("the CUDA backend's logits match the CPU backend's through prompts, entities and decode steps",
          "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  for (const auto& [preset, dtype] :
       {std::pair{"tiny", DType::kF32}, {"tiny", DType::kBF16}, {"small", DType::kBF16}}) {
    for (DType kv_dtype : {DType::kBF16, DType::kF32}) {
      const ModelFiles& model = random_model(preset, dtype);
      const ModelConfig& config = model.config();
      Engine cpu("cpu", model, kv_dtype, 32), cuda("cuda", model, kv_dtype, 32);
      std::vector<int32_t> first = random_tokens(config, 37, 1), second = random_tokens(config, 20, 2);
      const int32_t entity = config.entity_adaptor->entity_token_id;
      second[3] = second[11] = entity;
      std::vector<float> vectors(2 * static_cast<size_t>(config.entity_adaptor->entity_dim));
      std::mt19937 random(3);
      std::normal_distribution<float> normal;
      for (float& value : vectors) value = normal(random);
      std::vector<int32_t> first_blocks = {9, 2, 30, 4}, second_blocks = {0, 17, 5};
      const Batch prompts{
          {{first, {}, 0, first_blocks, LogitsWanted::kAll}, {second, vectors, 0, second_blocks, LogitsWanted::kLast}}};
      INFO(preset << " weights " << dtype_name(dtype) << " KV " << dtype_name(kv_dtype));
      std::vector<float> expected = cpu.run(prompts);
      CHECK(relative_difference(cuda.run(prompts), expected) < kTolerance);
      // Decode both sequences on the CPU's greedy tokens: the same shape every step, so graphs replay.
      int32_t next_first = greedy(expected, 36, config.vocab_size),
              next_second = greedy(expected, 37, config.vocab_size);
      for (int32_t step = 0; step < 12; ++step) {
        const Batch decode{{{std::span(&next_first, 1), {}, 37 + step, first_blocks, LogitsWanted::kLast},
                            {std::span(&next_second, 1), {}, 20 + step, second_blocks, LogitsWanted::kLast}}};
        std::vector<float> cpu_logits = cpu.run(decode);
        INFO("decode step " << step);
        CHECK(relative_difference(cuda.run(decode), cpu_logits) < kTolerance);
        next_first = greedy(cpu_logits, 0, config.vocab_size);
        next_second = greedy(cpu_logits, 1, config.vocab_size);
      }
    }
  }
}

TEST_CASE("the CUDA backend matches the CPU over a long context in chunks, where attention splits", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  const ModelFiles& model = random_model("tiny", DType::kBF16);
  const ModelConfig& config = model.config();
  Engine cpu("cpu", model, DType::kBF16, 160), cuda("cuda", model, DType::kBF16, 160);
  std::vector<int32_t> prompt = random_tokens(config, 2300, 4);
  std::vector<int32_t> blocks(150);
  for (int32_t i = 0; i < 150; ++i) blocks[i] = (i * 37) % 160;  // a permutation: 37 and 160 are coprime
  for (int32_t begin = 0; begin < 2300; begin += 512) {
    const int32_t count = std::min(512, 2300 - begin);
    const LogitsWanted wanted = begin + count == 2300 ? LogitsWanted::kAll : LogitsWanted::kNone;
    const Batch chunk{{{std::span(prompt).subspan(begin, count), {}, begin, blocks, wanted}}};
    std::vector<float> expected = cpu.run(chunk);
    INFO("chunk at " << begin);
    CHECK(relative_difference(cuda.run(chunk), expected) < kTolerance);
  }
  for (int32_t step = 0; step < 4; ++step) {
    const int32_t token = prompt[step];
    const Batch decode{{{std::span(&token, 1), {}, 2300 + step, blocks, LogitsWanted::kLast}}};
    std::vector<float> expected = cpu.run(decode);
    INFO("decode step " << step);
    CHECK(relative_difference(cuda.run(decode), expected) < kTolerance);
  }
}

TEST_CASE(
    "with tensor-core prompt attention, a step mixing a long prompt chunk, a short one and a split decode row "
    "matches the CPU",
    "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  // The environment decides it when the backend is made (cuda_backend.h); set for this test only.
  struct PromptAttention {
    const char* before = std::getenv("RECGPT_CUDA_PROMPT_ATTENTION");
    std::string kept = before != nullptr ? before : "";
    PromptAttention() { setenv("RECGPT_CUDA_PROMPT_ATTENTION", "tensor_cores", 1); }
    ~PromptAttention() {
      if (before != nullptr) {
        setenv("RECGPT_CUDA_PROMPT_ATTENTION", kept.c_str(), 1);
      } else {
        unsetenv("RECGPT_CUDA_PROMPT_ATTENTION");
      }
    }
  } tensor_cores;
  const ModelFiles& model = random_model("small", DType::kBF16);  // head_dim 32: the tensor-core kernel has it
  const ModelConfig& config = model.config();
  Engine cpu("cpu", model, DType::kBF16, 256), cuda("cuda", model, DType::kBF16, 256);
  // B's chunk: 25 tiles of 64 rows, enough blocks (x 8 heads) for the kernel to be chosen on GPUs of up to 200
  // multiprocessors (cuda_backend.cpp, PromptTiling).
  std::vector<int32_t> long_context = random_tokens(config, 2100, 5), chunk = random_tokens(config, 1600, 6),
                       short_chunk = random_tokens(config, 5, 7);
  std::vector<int32_t> blocks_a(140), blocks_b(100), blocks_c(1);
  for (int32_t i = 0; i < 140; ++i) blocks_a[i] = (i * 37) % 256;  // a permutation: 37 and 256 are coprime
  for (int32_t i = 0; i < 100; ++i) blocks_b[i] = ((140 + i) * 37) % 256;
  blocks_c[0] = (240 * 37) % 256;
  for (int32_t begin = 0; begin < 2100; begin += 700) {  // sequence A's context, in chunks of 700 (the kernel's)
    const Batch prefill{{{std::span(long_context).subspan(begin, 700), {}, begin, blocks_a, LogitsWanted::kLast}}};
    std::vector<float> expected = cpu.run(prefill);
    INFO("prefill chunk at " << begin);
    CHECK(relative_difference(cuda.run(prefill), expected) < kTolerance);
  }
  // A's decode row at position 2100 (its attention splits), B's 1600-row prompt (tensor cores) and C's 5-row one
  // (SIMT) in one step.
  const int32_t next = long_context[0];
  const Batch mixed{{{std::span(&next, 1), {}, 2100, blocks_a, LogitsWanted::kLast},
                     {chunk, {}, 0, blocks_b, LogitsWanted::kAll},
                     {short_chunk, {}, 0, blocks_c, LogitsWanted::kAll}}};
  std::vector<float> expected = cpu.run(mixed);
  CHECK(relative_difference(cuda.run(mixed), expected) < kTolerance);
}

// FP8 KV rounds every stored key and value to 3 mantissa bits: the logits move further than bf16's, and this is the
// bound we state (to be confirmed on the GPU machine's first run; docs/benchmarks.md records what it measured).
constexpr double kFp8Tolerance = 0.1;

TEST_CASE("FP8 KV keeps the CUDA backend's logits within the stated bound of the CPU's f32 KV", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  const ModelFiles& model = random_model("small", DType::kBF16);
  const ModelConfig& config = model.config();
  Engine cpu("cpu", model, DType::kF32, 32), cuda("cuda", model, DType::kFP8E4M3, 32);
  std::vector<int32_t> prompt = random_tokens(config, 150, 6), blocks(12);
  for (int32_t i = 0; i < 12; ++i) blocks[i] = 31 - 2 * i;
  const Batch batch{{{prompt, {}, 0, blocks, LogitsWanted::kAll}}};
  const std::vector<float> expected = cpu.run(batch);
  const std::vector<float> actual = cuda.run(batch);
  CHECK(relative_difference(actual, expected) < kFp8Tolerance);
  int agreeing = 0;
  for (int64_t row = 0; row < 150; ++row) {
    agreeing += greedy(actual, row, config.vocab_size) == greedy(expected, row, config.vocab_size);
  }
  CHECK(agreeing >= 140);
}

TEST_CASE("the CPU backend refuses FP8 KV, which only the CUDA backend reads", "[cuda]") {
  const ModelFiles& model = random_model("tiny", DType::kBF16);
  const ModelConfig& config = model.config();
  auto backend = create_backend("cpu", model, {});
  REQUIRE(backend.is_ok());
  auto cache = (*backend)->create_kv_cache(
      {config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 16, DType::kFP8E4M3, 4});
  CHECK(cache.status().code() == StatusCode::kUnimplemented);
}

TEST_CASE("the CUDA backend refuses a KV cache it did not make", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  const ModelFiles& model = random_model("tiny", DType::kBF16);
  const ModelConfig& config = model.config();
  Engine cuda("cuda", model, DType::kBF16, 4);
  auto host_cache =
      KvCache::create({config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 16, DType::kBF16, 4});
  REQUIRE(host_cache.is_ok());
  std::vector<int32_t> tokens = random_tokens(config, 3, 5), blocks = {0};
  HostLogits logits;
  const Status status = cuda.backend->forward({{{tokens, {}, 0, blocks, LogitsWanted::kLast}}}, *host_cache, logits);
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(status.message(), Catch::Contains("create_kv_cache"));
}

TEST_CASE("asking for the CUDA backend says why it cannot be had", "[cuda]") {
  const ModelFiles& model = random_model("tiny", DType::kBF16);
  auto made = create_backend("cuda", model, {});
  if (!cuda_built()) {
    CHECK(made.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(made.status().message(), Catch::Contains("unknown backend"));
    return;
  }
  int device_count_seen = made.is_ok() ? 1 : 0;
  if (!made.is_ok()) {
    INFO(made.status().to_string());
    CHECK(made.status().code() == StatusCode::kUnavailable);
    CHECK_THAT(made.status().message(), Catch::Contains("no CUDA device") || Catch::Contains("cannot open libcublas"));
  }
  BackendOptions far_device;
  far_device.cuda_device = 64;
  auto beyond = create_backend("cuda", model, far_device);
  REQUIRE_FALSE(beyond.is_ok());
  CHECK(beyond.status().code() == (device_count_seen > 0 ? StatusCode::kInvalidArgument : StatusCode::kUnavailable));
}

}  // namespace
}  // namespace recgpt
