// The forward pass gives the same logits however a sequence is batched, chunked or cached.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "engine/backend.h"
#include "engine/generator.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"
#include "tests/unit/engine/random_models.h"

namespace recgpt {
namespace {

const ModelFiles& tiny_model(DType dtype) { return testing::random_model("tiny", dtype, 7); }

struct Engine {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<KvCache> cache;

  Engine(const ModelFiles& model, int64_t num_blocks, DType kv_dtype = DType::kF32) {
    const ModelConfig& config = model.config();
    KvCacheConfig cache_config{
        config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 16, kv_dtype, num_blocks};
    auto created = KvCache::create(cache_config);
    REQUIRE(created.is_ok());
    cache = std::make_unique<KvCache>(std::move(created).value());
    auto made = create_backend("cpu", model, {});
    REQUIRE(made.is_ok());
    backend = std::move(made).value();
  }

  std::vector<float> run(const Batch& batch) {
    HostLogits logits;
    Status status = backend->forward(batch, *cache, logits);
    INFO(status.to_string());
    REQUIRE(status.is_ok());
    return {logits.begin(), logits.end()};
  }
};

using testing::random_tokens;

using testing::relative_difference;

std::span<const float> rows(const std::vector<float>& logits, const ModelConfig& config, int64_t first, int64_t count) {
  return std::span(logits).subspan(first * config.vocab_size, count * config.vocab_size);
}

TEST_CASE("prefill of a whole prompt equals token-by-token decode") {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const ModelFiles& model = tiny_model(dtype);
    const ModelConfig& config = model.config();
    std::vector<int32_t> prompt = random_tokens(config, 37, 1);
    std::vector<int32_t> blocks = {5, 2, 9};  // deliberately not contiguous

    Engine prefill(model, 16);
    std::vector<float> all = prefill.run({{{prompt, {}, 0, blocks, LogitsWanted::kAll}}});

    Engine decode(model, 16);
    for (int32_t position = 0; position < 37; ++position) {
      std::vector<float> one =
          decode.run({{{std::span(prompt).subspan(position, 1), {}, position, blocks, LogitsWanted::kLast}}});
      INFO("dtype " << dtype_name(dtype) << " position " << position);
      CHECK(relative_difference(rows(all, config, position, 1), one) < 1e-5);
    }
  }
}

TEST_CASE("a sequence alone equals the same sequence in a mixed batch") {
  const ModelFiles& model = tiny_model(DType::kF32);
  const ModelConfig& config = model.config();
  std::vector<int32_t> alone_prompt = random_tokens(config, 20, 2);
  std::vector<int32_t> other_prompt = random_tokens(config, 33, 3);
  std::vector<int32_t> decoding_prompt = random_tokens(config, 9, 4);

  Engine alone(model, 8);
  std::vector<int32_t> alone_blocks = {0, 1};
  std::vector<float> expected = alone.run({{{alone_prompt, {}, 0, alone_blocks, LogitsWanted::kAll}}});

  Engine mixed(model, 16);
  std::vector<int32_t> decoding_blocks = {3};
  mixed.run({{{std::span(decoding_prompt).first(8), {}, 0, decoding_blocks, LogitsWanted::kNone}}});
  std::vector<int32_t> other_blocks = {7, 8, 4};
  std::vector<int32_t> target_blocks = {11, 6};
  Batch batch;
  batch.sequences.push_back({std::span(decoding_prompt).subspan(8, 1), {}, 8, decoding_blocks, LogitsWanted::kLast});
  batch.sequences.push_back({other_prompt, {}, 0, other_blocks, LogitsWanted::kLast});
  batch.sequences.push_back({alone_prompt, {}, 0, target_blocks, LogitsWanted::kAll});
  std::vector<float> logits = mixed.run(batch);
  REQUIRE(logits.size() == static_cast<size_t>((1 + 1 + 20) * config.vocab_size));
  CHECK(relative_difference(expected, rows(logits, config, 2, 20)) < 1e-5);
}

TEST_CASE("paged attention over reused prefix blocks equals a fresh computation") {
  const ModelFiles& model = tiny_model(DType::kF32);
  const ModelConfig& config = model.config();
  std::vector<int32_t> prefix = random_tokens(config, 32, 5);  // two full blocks
  std::vector<int32_t> suffix_a = random_tokens(config, 7, 6);
  std::vector<int32_t> suffix_b = random_tokens(config, 11, 7);
  std::vector<int32_t> prompt_b = prefix;
  prompt_b.insert(prompt_b.end(), suffix_b.begin(), suffix_b.end());

  Engine fresh(model, 8);
  std::vector<int32_t> fresh_blocks = {0, 1, 2};
  std::vector<float> expected = fresh.run({{{prompt_b, {}, 0, fresh_blocks, LogitsWanted::kAll}}});

  Engine shared(model, 8);
  std::vector<int32_t> prompt_a = prefix;
  prompt_a.insert(prompt_a.end(), suffix_a.begin(), suffix_a.end());
  std::vector<int32_t> blocks_a = {4, 1, 6};
  shared.run({{{prompt_a, {}, 0, blocks_a, LogitsWanted::kLast}}});
  std::vector<int32_t> blocks_b = {4, 1, 3};  // the prefix blocks of sequence a, then its own
  std::vector<float> suffix_logits = shared.run({{{suffix_b, {}, 32, blocks_b, LogitsWanted::kAll}}});
  CHECK(relative_difference(rows(expected, config, 32, 11), suffix_logits) < 1e-5);
}

TEST_CASE("bf16 KV cache stays close to the f32 one") {
  const ModelFiles& model = tiny_model(DType::kF32);
  std::vector<int32_t> prompt = random_tokens(model.config(), 25, 8);
  std::vector<int32_t> blocks = {0, 1};
  Engine f32_cache(model, 4, DType::kF32);
  Engine bf16_cache(model, 4, DType::kBF16);
  std::vector<float> expected = f32_cache.run({{{prompt, {}, 0, blocks, LogitsWanted::kAll}}});
  std::vector<float> actual = bf16_cache.run({{{prompt, {}, 0, blocks, LogitsWanted::kAll}}});
  CHECK(relative_difference(expected, actual) < 2e-2);
}

TEST_CASE("entity tokens take their embedding from the adaptor") {
  const ModelFiles& model = tiny_model(DType::kF32);
  const ModelConfig& config = model.config();
  std::vector<int32_t> prompt = random_tokens(config, 12, 9);
  prompt[3] = prompt[7] = config.entity_adaptor->entity_token_id;
  std::vector<float> vectors(2 * config.entity_adaptor->entity_dim);
  std::mt19937 random(10);
  std::normal_distribution<float> normal;
  for (float& value : vectors) value = normal(random);
  std::vector<int32_t> blocks = {0};

  Engine engine(model, 4);
  std::vector<float> first = engine.run({{{prompt, vectors, 0, blocks, LogitsWanted::kAll}}});
  std::swap_ranges(vectors.begin(), vectors.begin() + config.entity_adaptor->entity_dim,
                   vectors.begin() + config.entity_adaptor->entity_dim);
  std::vector<float> swapped = engine.run({{{prompt, vectors, 0, blocks, LogitsWanted::kAll}}});
  // Positions before the first entity are unaffected; after it, swapping the two entities changes the logits.
  CHECK(relative_difference(rows(first, config, 0, 3), rows(swapped, config, 0, 3)) == 0.0);
  CHECK(relative_difference(rows(first, config, 3, 9), rows(swapped, config, 3, 9)) > 1e-3);

  HostLogits logits;
  Status missing = engine.backend->forward({{{prompt, {}, 0, blocks, LogitsWanted::kAll}}}, *engine.cache, logits);
  CHECK(missing.code() == StatusCode::kInvalidArgument);

  // A cache of another model's shape is refused before any kernel indexes it.
  auto other_shape =
      KvCache::create({config.num_hidden_layers, config.num_key_value_heads, config.head_dim * 2, 16, DType::kF32, 4});
  REQUIRE(other_shape.is_ok());
  Status mismatched =
      engine.backend->forward({{{prompt, vectors, 0, blocks, LogitsWanted::kAll}}}, *other_shape, logits);
  CHECK(mismatched.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(mismatched.message(), Catch::Contains("the model needs"));
}

TEST_CASE("generator reuses a shared prefix and generates the same tokens as without caching") {
  const ModelFiles& model = tiny_model(DType::kF32);
  std::vector<int32_t> context = random_tokens(model.config(), 40, 11);
  auto generate_all = [&](bool prefix_caching, GeneratorStats& stats) {
    GeneratorOptions options;
    options.prefix_caching = prefix_caching;
    options.kv_cache_bytes = 4 << 20;
    options.max_batch_tokens = 24;  // forces chunked prefill
    auto generator = Generator::create(model, options);
    REQUIRE(generator.is_ok());
    std::map<int64_t, std::vector<int32_t>> outputs;
    for (uint32_t agent = 0; agent < 3; ++agent) {
      GenerationRequest request;
      request.prompt = context;
      std::vector<int32_t> instruction = random_tokens(model.config(), 5 + agent, 20 + agent);
      request.prompt.insert(request.prompt.end(), instruction.begin(), instruction.end());
      request.max_new_tokens = 6;
      auto id = (*generator)->add(request);
      REQUIRE(id.is_ok());
      // Run the first agent alone so the others find its blocks cached.
      while (agent == 0 && !(*generator)->idle()) {
        auto tokens = (*generator)->step();
        REQUIRE(tokens.is_ok());
        for (const StepToken& token : *tokens) outputs[token.sequence_id].push_back(token.token);
      }
    }
    for (int steps = 0; !(*generator)->idle() && steps < 100; ++steps) {
      auto tokens = (*generator)->step();
      REQUIRE(tokens.is_ok());
      for (const StepToken& token : *tokens) outputs[token.sequence_id].push_back(token.token);
    }
    REQUIRE((*generator)->idle());
    CHECK((*generator)->kv_cache().blocks().num_used_blocks() == 0);
    stats = (*generator)->stats();
    return outputs;
  };
  GeneratorStats cached_stats, uncached_stats;
  auto cached = generate_all(true, cached_stats);
  auto uncached = generate_all(false, uncached_stats);
  CHECK(cached == uncached);
  CHECK(cached_stats.prompt_tokens_cached == 2 * 32);  // agents 2 and 3 reuse two full blocks of context
  CHECK(uncached_stats.prompt_tokens_cached == 0);
  CHECK(cached_stats.prompt_tokens_computed + cached_stats.prompt_tokens_cached ==
        uncached_stats.prompt_tokens_computed);
}

// The bytes of one layer's K and V arrays (the whole pool) as they are now.
std::vector<std::byte> layer_bytes(KvCache& cache, int layer) {
  const auto* base = static_cast<const std::byte*>(cache.storage_data()) + 2 * layer * cache.array_stride_bytes();
  return std::vector<std::byte>(base, base + 2 * cache.array_stride_bytes());
}

TEST_CASE("after_layer runs once per layer in order, when that layer's KV is final and the next one's untouched",
          "[engine][forward]") {
  const ModelFiles& model = tiny_model(DType::kF32);
  const ModelConfig& config = model.config();
  Engine engine(model, 8);
  std::memset(engine.cache->storage_data(), 0x7f, 2 * config.num_hidden_layers * engine.cache->array_stride_bytes());
  const std::vector<int32_t> prompt = random_tokens(config, 37, 5);
  const std::vector<int32_t> blocks = {3, 0, 6};
  Batch batch;
  batch.sequences.push_back({prompt, {}, 0, blocks, LogitsWanted::kLast});
  std::vector<int32_t> order;
  std::vector<std::vector<std::byte>> at_hook;  // layer l's bytes when its hook ran
  std::vector<bool> next_untouched;
  const std::vector<std::byte> pristine = layer_bytes(*engine.cache, 0);
  batch.after_layer = [&](int32_t layer) {
    order.push_back(layer);
    at_hook.push_back(layer_bytes(*engine.cache, layer));
    if (layer + 1 < config.num_hidden_layers)
      next_untouched.push_back(layer_bytes(*engine.cache, layer + 1) == pristine);
  };
  engine.run(batch);
  REQUIRE(static_cast<int>(order.size()) == config.num_hidden_layers);
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
    CHECK(order[layer] == layer);
    CHECK(at_hook[layer] == layer_bytes(*engine.cache, layer));  // nothing changed it after its hook
    CHECK(at_hook[layer] != pristine);                           // and the hook saw it written
  }
  for (bool untouched : next_untouched) CHECK(untouched);
}

}  // namespace
}  // namespace recgpt
