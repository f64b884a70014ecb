// Chunked prefill: prompts computed a chunk at a time, interleaved in shared steps, fill the same KV and sample
// the same first token as each prompt computed whole, and only the step that completes a prompt indexes it.
#include "prefill_node/prefill_executor.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"

namespace recgpt {
namespace {

struct TinyModel {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("recgpt_chunks_" + std::to_string(::getpid()));
  std::unique_ptr<ModelFiles> model;
  TinyModel() {
    REQUIRE(make_model({"tiny", 5, DType::kF32, dir.string()}).is_ok());
    auto opened = ModelFiles::open(dir.string());
    REQUIRE(opened.is_ok());
    model = std::move(opened).value();
  }
  ~TinyModel() { std::filesystem::remove_all(dir); }
};

// A prefill executor over its own backend and KV cache.
struct Prefill {
  std::unique_ptr<Generator> engine;
  std::unique_ptr<prefill::PrefillExecutor> executor;
  explicit Prefill(const ModelFiles& model) {
    GeneratorOptions options;
    options.kv_cache_bytes = 4 << 20;
    engine = Generator::create(model, options).value();
    executor = std::make_unique<prefill::PrefillExecutor>(model.config(), engine->backend(), engine->kv_cache());
  }
};

// One prompt with entity tokens at `entity_positions`, its vectors, and a greedy input over them.
struct Prompt {
  std::vector<int32_t> tokens;
  std::vector<float> vectors;
  prefill::PrefillInput input() const { return {tokens, vectors, {}, SamplingParams{}}; }
};

Prompt make_prompt(const ModelConfig& config, int length, int salt, std::initializer_list<int> entity_positions) {
  Prompt prompt;
  const int32_t entity = config.entity_adaptor->entity_token_id;
  for (int i = 0; i < length; ++i) {
    int32_t token = 3 + (i * 31 + salt * 7) % 150;
    if (token == entity) ++token;
    prompt.tokens.push_back(token);
  }
  for (int position : entity_positions) prompt.tokens[static_cast<size_t>(position)] = entity;
  for (size_t i = 0; i < entity_positions.size() * static_cast<size_t>(config.entity_adaptor->entity_dim); ++i)
    prompt.vectors.push_back(std::sin(0.37f * static_cast<float>(i + static_cast<size_t>(salt))));
  return prompt;
}

// Largest |difference| between the KV (every layer, K and V) of the first `tokens` positions of two block tables.
float max_kv_difference(KvCache& a, std::span<const int32_t> a_blocks, KvCache& b, std::span<const int32_t> b_blocks,
                        int64_t tokens) {
  const KvCacheConfig& config = a.config();
  const size_t block_floats = config.block_bytes_per_layer() / sizeof(float);
  const size_t token_floats = block_floats / static_cast<size_t>(config.block_size);
  float worst = 0;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    for (int array = 0; array < 2; ++array) {
      const size_t offset = (2 * static_cast<size_t>(layer) + array) * a.array_stride_bytes();
      for (int64_t t = 0; t < tokens; ++t) {
        const auto block = static_cast<size_t>(t / config.block_size);
        const auto slot = static_cast<size_t>(t % config.block_size);
        const auto* x =
            reinterpret_cast<const float*>(static_cast<const std::byte*>(a.storage_data()) + offset +
                                           static_cast<size_t>(a_blocks[block]) * config.block_bytes_per_layer()) +
            slot * token_floats;
        const auto* y =
            reinterpret_cast<const float*>(static_cast<const std::byte*>(b.storage_data()) + offset +
                                           static_cast<size_t>(b_blocks[block]) * config.block_bytes_per_layer()) +
            slot * token_floats;
        for (size_t i = 0; i < token_floats; ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
      }
    }
  }
  return worst;
}

TEST_CASE("chunked, interleaved prefill fills the KV and samples the first token of whole-prompt prefill",
          "[prefill][chunked]") {
  TinyModel tiny;
  const ModelConfig& config = tiny.model->config();
  const Prompt long_prompt = make_prompt(config, 71, 1, {2, 20, 40, 66});
  const Prompt short_prompt = make_prompt(config, 23, 2, {5});

  Prefill whole(*tiny.model);
  const prefill::PrefillInput whole_long_input = long_prompt.input();
  const prefill::PrefillInput whole_short_input = short_prompt.input();
  auto whole_long = whole.executor->plan(whole_long_input);
  auto whole_short = whole.executor->plan(whole_short_input);
  REQUIRE(whole_long.is_ok());
  REQUIRE(whole_short.is_ok());
  auto long_outcome = whole.executor->compute(whole_long_input, *whole_long, nullptr);
  auto short_outcome = whole.executor->compute(whole_short_input, *whole_short, nullptr);
  REQUIRE(long_outcome.is_ok());
  REQUIRE(short_outcome.is_ok());

  Prefill chunked(*tiny.model);
  const prefill::PrefillInput long_input = long_prompt.input();
  const prefill::PrefillInput short_input = short_prompt.input();
  auto long_plan = chunked.executor->plan(long_input);
  auto short_plan = chunked.executor->plan(short_input);
  REQUIRE(long_plan.is_ok());
  REQUIRE(short_plan.is_ok());
  // Steps of at most 19 tokens, oldest first: chunk boundaries fall inside blocks and between entity tokens.
  int steps = 0;
  int layers_seen = 0;
  std::optional<prefill::PrefillOutcome> long_result;
  std::optional<prefill::PrefillOutcome> short_result;
  while (!long_result || !short_result) {
    REQUIRE(++steps < 20);
    int64_t budget = 19;
    std::vector<prefill::PrefillChunk> chunks;
    for (auto [input, plan] : {std::pair{&long_input, &*long_plan}, std::pair{&short_input, &*short_plan}}) {
      const int64_t take =
          std::min<int64_t>(static_cast<int64_t>(input->prompt.size()) - plan->computed_tokens, budget);
      if (take <= 0) continue;
      chunks.push_back({input, plan, take});
      budget -= take;
    }
    auto outcomes = chunked.executor->compute_chunks(chunks, [&](int32_t) {
      ++layers_seen;
      return Status::ok();
    });
    REQUIRE(outcomes.is_ok());
    for (size_t i = 0; i < chunks.size(); ++i) {
      CHECK(outcomes->at(i).has_value() == chunks[i].plan->complete(*chunks[i].input));
      if (!outcomes->at(i)) continue;
      (chunks[i].plan == &*long_plan ? long_result : short_result) = outcomes->at(i);
    }
    // A prompt is indexed for later prompts only once complete.
    CHECK(chunked.engine->kv_cache().blocks().is_registered(long_plan->blocks.front()) ==
          long_plan->complete(long_input));
  }
  CHECK(steps == 5);  // 94 tokens, 19 a step
  CHECK(layers_seen == steps * config.num_hidden_layers);
  CHECK(long_result->first_token == long_outcome->first_token);
  CHECK(short_result->first_token == short_outcome->first_token);
  CHECK(long_result->tokens_computed == 71);
  CHECK(short_result->tokens_computed == 23);
  CHECK(max_kv_difference(chunked.engine->kv_cache(), long_plan->blocks, whole.engine->kv_cache(), whole_long->blocks,
                          71) < 1e-4f);
  CHECK(max_kv_difference(chunked.engine->kv_cache(), short_plan->blocks, whole.engine->kv_cache(), whole_short->blocks,
                          23) < 1e-4f);

  // The completed long prompt is a cached prefix for the next one.
  const Prompt again = long_prompt;
  const prefill::PrefillInput again_input = again.input();
  auto again_plan = chunked.executor->plan(again_input);
  REQUIRE(again_plan.is_ok());
  CHECK(again_plan->cached_tokens == 64);
  chunked.executor->release(*again_plan);
  chunked.executor->release(*long_plan);
  chunked.executor->release(*short_plan);
  CHECK(chunked.engine->kv_cache().blocks().num_used_blocks() == 0);
}

TEST_CASE("a prefill chunk of no tokens or past its prompt is refused and changes nothing", "[prefill][chunked]") {
  TinyModel tiny;
  Prefill prefill(*tiny.model);
  const Prompt prompt = make_prompt(tiny.model->config(), 20, 3, {});
  const prefill::PrefillInput input = prompt.input();
  auto plan = prefill.executor->plan(input);
  REQUIRE(plan.is_ok());
  for (int64_t tokens : {int64_t{0}, int64_t{-3}, int64_t{21}}) {
    const prefill::PrefillChunk chunk{&input, &*plan, tokens};
    auto outcome = prefill.executor->compute_chunks(std::span(&chunk, 1), nullptr);
    CHECK(outcome.status().code() == StatusCode::kInvalidArgument);
    CHECK(plan->computed_tokens == 0);
  }
  prefill.executor->release(*plan);
}

}  // namespace
}  // namespace recgpt
