// Generator behaviour at its edges: entities by id, running out of KV blocks, cancellation.
#include "engine/generator.h"

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <limits>

#include "engine/block_hash.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"

namespace recgpt {
namespace {

class TinyModel {
 public:
  TinyModel() : dir_(std::filesystem::temp_directory_path() / ("recgpt_generator_" + std::to_string(::getpid()))) {
    REQUIRE(make_model({"tiny", 3, DType::kF32, dir_.string()}).is_ok());
    auto opened = ModelFiles::open(dir_.string());
    REQUIRE(opened.is_ok());
    model_ = std::move(opened).value();
  }
  ~TinyModel() { std::filesystem::remove_all(dir_); }

  const ModelFiles& model() const { return *model_; }
  const std::filesystem::path& dir() const { return dir_; }
  int32_t entity_token() const { return model_->config().entity_adaptor->entity_token_id; }
  int entity_dim() const { return model_->config().entity_adaptor->entity_dim; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<ModelFiles> model_;
};

std::vector<int32_t> run_to_end(Generator& generator, int64_t id, FinishReason* finish = nullptr) {
  std::vector<int32_t> tokens;
  for (int step = 0; step < 200 && !generator.idle(); ++step) {
    auto produced = generator.step();
    REQUIRE(produced.is_ok());
    for (const StepToken& token : *produced) {
      if (token.sequence_id != id) continue;
      if (token.token >= 0) tokens.push_back(token.token);
      if (finish != nullptr && token.finish != FinishReason::kNone) *finish = token.finish;
    }
  }
  REQUIRE(generator.idle());
  return tokens;
}

TEST_CASE("entities looked up by id generate what the same vectors given inline generate") {
  TinyModel tiny;
  std::vector<std::string> ids = {"item:42", "query:red shoes"};
  std::vector<float> vectors(2 * tiny.entity_dim());
  for (size_t i = 0; i < vectors.size(); ++i) vectors[i] = std::sin(0.37f * static_cast<float>(i));
  std::string store_path = (tiny.dir() / "entities.bin").string();
  REQUIRE(write_entity_store(store_path, tiny.entity_dim(), ids, vectors).is_ok());
  auto store = EntityStore::open(store_path);
  REQUIRE(store.is_ok());

  GenerationRequest by_id;
  by_id.prompt = {10, tiny.entity_token(), 11, 12, tiny.entity_token(), 13};
  by_id.max_new_tokens = 5;
  GenerationRequest inline_vectors = by_id;
  inline_vectors.entity_vectors = vectors;
  REQUIRE(attach_entities_by_id(by_id, tiny.model().config(), *store, ids).is_ok());
  CHECK(by_id.entity_keys == std::vector<uint64_t>{entity_key_from_id(ids[0]), entity_key_from_id(ids[1])});

  auto generator = Generator::create(tiny.model(), {});
  REQUIRE(generator.is_ok());
  auto first = (*generator)->add(by_id);
  REQUIRE(first.is_ok());
  std::vector<int32_t> from_store = run_to_end(**generator, *first);
  auto second = (*generator)->add(inline_vectors);
  REQUIRE(second.is_ok());
  CHECK(run_to_end(**generator, *second) == from_store);
  CHECK(from_store.size() == 5);

  std::vector<std::string> unknown = {"item:42", "item:missing"};
  Status missing = attach_entities_by_id(by_id, tiny.model().config(), *store, unknown);
  CHECK(missing.code() == StatusCode::kNotFound);
  CHECK(missing.message().find("item:missing") != std::string::npos);
  std::vector<std::string> too_few = {"item:42"};
  CHECK(attach_entities_by_id(by_id, tiny.model().config(), *store, too_few).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("a request with the wrong number of entity values is rejected before it runs") {
  TinyModel tiny;
  auto generator = Generator::create(tiny.model(), {});
  REQUIRE(generator.is_ok());
  GenerationRequest request;
  request.prompt = {1, tiny.entity_token(), 2};
  CHECK((*generator)->add(request).status().code() == StatusCode::kInvalidArgument);
  request.prompt = {1, 99999999};
  CHECK((*generator)->add(request).status().code() == StatusCode::kInvalidArgument);
  request.prompt = {};
  CHECK((*generator)->add(request).status().code() == StatusCode::kInvalidArgument);
  CHECK((*generator)->idle());
}

TEST_CASE("a sequence that outgrows the KV pool ends with out-of-blocks and returns every block") {
  TinyModel tiny;
  GeneratorOptions options;
  const ModelConfig& config = tiny.model().config();
  KvCacheConfig shape{config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 16, DType::kF32, 0};
  options.kv_cache_bytes = static_cast<int64_t>(shape.bytes_per_block()) * 2;  // 32 tokens in all
  auto generator = Generator::create(tiny.model(), options);
  REQUIRE(generator.is_ok());

  GenerationRequest request;
  request.prompt.assign(20, 7);
  request.max_new_tokens = 100;
  auto id = (*generator)->add(request);
  REQUIRE(id.is_ok());
  FinishReason finish = FinishReason::kNone;
  std::vector<int32_t> tokens = run_to_end(**generator, *id, &finish);
  CHECK(finish == FinishReason::kOutOfKvBlocks);
  CHECK(tokens.size() == 32 - 20 + 1);  // the token at position 32 was sampled; its KV had no block
  CHECK((*generator)->kv_cache().blocks().num_used_blocks() == 0);

  request.prompt.assign(40, 7);  // can never fit
  auto too_long = (*generator)->add(request);
  REQUIRE(too_long.is_ok());
  run_to_end(**generator, *too_long, &finish);
  CHECK(finish == FinishReason::kOutOfKvBlocks);
  CHECK((*generator)->kv_cache().blocks().num_used_blocks() == 0);
}

TEST_CASE("cancelling a running sequence returns its blocks") {
  TinyModel tiny;
  auto generator = Generator::create(tiny.model(), {});
  REQUIRE(generator.is_ok());
  GenerationRequest request;
  request.prompt.assign(50, 9);
  request.max_new_tokens = 100;
  auto id = (*generator)->add(request);
  REQUIRE(id.is_ok());
  REQUIRE((*generator)->step().is_ok());
  CHECK((*generator)->kv_cache().blocks().num_used_blocks() == 4);
  (*generator)->cancel(*id);
  CHECK((*generator)->idle());
  CHECK((*generator)->kv_cache().blocks().num_used_blocks() == 0);
  CHECK((*generator)->kv_cache().blocks().check_invariants().is_ok());
}

// What a prefill node does for `request` in `generator`'s cache: the prompt's KV into fresh blocks (with room
// for the decode budget), and the first token by greedy choice. The blocks are the caller's.
std::pair<std::vector<int32_t>, int32_t> prefill_elsewhere(Generator& generator, const GenerationRequest& request,
                                                           int32_t entity_token) {
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.max_new_tokens;
  auto blocks = generator.kv_cache().blocks().allocate((total + 15) / 16);
  REQUIRE(blocks.is_ok());
  Batch batch;
  batch.sequences.push_back({request.prompt, request.entity_vectors, 0, *blocks, LogitsWanted::kLast});
  HostLogits logits;
  REQUIRE(generator.backend().forward(batch, generator.kv_cache(), logits).is_ok());
  logits[entity_token] = -std::numeric_limits<float>::infinity();
  const auto first = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  return {*blocks, first};
}

TEST_CASE("a sequence prefilled elsewhere decodes greedily to what a colocated run produces, entities included") {
  TinyModel tiny;
  GenerationRequest request;
  request.prompt = {5, 9, 14, tiny.entity_token(), 3, 7, 11, 2, 8, 6, 4, 13, 12, 10, 1, 15, 17, 19, 21};
  request.entity_vectors.resize(tiny.entity_dim());
  for (size_t i = 0; i < request.entity_vectors.size(); ++i) request.entity_vectors[i] = std::cos(0.21f * i);
  request.max_new_tokens = 12;

  auto colocated = Generator::create(tiny.model(), {});
  REQUIRE(colocated.is_ok());
  auto id = (*colocated)->add(request);
  REQUIRE(id.is_ok());
  const std::vector<int32_t> expected = run_to_end(**colocated, *id);
  REQUIRE(expected.size() == 12);

  auto decode = Generator::create(tiny.model(), {});
  REQUIRE(decode.is_ok());
  auto [blocks, first] = prefill_elsewhere(**decode, request, tiny.entity_token());
  CHECK(first == expected[0]);
  GenerationRequest prefilled = request;
  prefilled.entity_vectors.clear();  // the decode node gets keys, not vectors
  prefilled.entity_keys = {entity_key_from_vector(request.entity_vectors)};
  auto added = (*decode)->add_prefilled(prefilled, blocks, first);
  REQUIRE(added.is_ok());
  std::vector<int32_t> decoded = {first};
  for (int32_t token : run_to_end(**decode, *added)) decoded.push_back(token);
  CHECK(decoded == expected);
  CHECK((*decode)->kv_cache().blocks().num_used_blocks() == 0);
  CHECK((*decode)->kv_cache().blocks().num_cached_blocks() == 1);  // the prompt's one full block, indexed
}

TEST_CASE("a prefilled sequence with a short block table, no decode budget or unknown blocks is refused") {
  TinyModel tiny;
  auto generator = Generator::create(tiny.model(), {});
  REQUIRE(generator.is_ok());
  BlockManager& blocks = (*generator)->kv_cache().blocks();
  GenerationRequest request;
  request.prompt = std::vector<int32_t>(40, 7);
  request.max_new_tokens = 8;
  auto held = blocks.allocate(3);
  REQUIRE(held.is_ok());
  auto short_table = (*generator)->add_prefilled(request, {(*held)[0], (*held)[1]}, 5);
  CHECK(short_table.status().code() == StatusCode::kInvalidArgument);
  request.max_new_tokens = 1;
  CHECK((*generator)->add_prefilled(request, *held, 5).status().code() == StatusCode::kInvalidArgument);
  request.max_new_tokens = 8;
  const int32_t free_block = (*held)[2] + 1;
  CHECK((*generator)->add_prefilled(request, {(*held)[0], (*held)[1], free_block}, 5).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK((*generator)->idle());
  for (int32_t block : *held) CHECK(blocks.ref_count(block) == 1);  // nothing taken over on refusal
  blocks.release(*held);
}

// Forbids a set of tokens and records the length of the sequence at each call.
class ForbidTokens : public LogitsProcessor {
 public:
  explicit ForbidTokens(std::vector<int32_t> forbidden, bool forbid_all = false)
      : forbidden_(std::move(forbidden)), forbid_all_(forbid_all) {}
  void process(std::span<float> logits, std::span<const int32_t> tokens) override {
    seen_lengths.push_back(tokens.size());
    if (forbid_all_) {
      std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
      return;
    }
    for (int32_t token : forbidden_) logits[static_cast<size_t>(token)] = -std::numeric_limits<float>::infinity();
  }
  std::vector<size_t> seen_lengths;

 private:
  std::vector<int32_t> forbidden_;
  bool forbid_all_;
};

TEST_CASE("sampled tokens do not depend on how many threads sample a step's rows") {
  TinyModel tiny;
  // Seeded requests in every sampling mode, all in the same steps, and one whose constraint ends it mid-batch.
  std::vector<GenerationRequest> requests;
  // The tiny model's logits are peaked: high temperatures, so that the seeds show.
  const SamplingParams modes[] = {{.temperature = 10.0f, .seed = 1},
                                  {.temperature = 8.0f, .top_k = 20, .seed = 2},
                                  {.temperature = 12.0f, .top_p = 0.9f, .seed = 3},
                                  {},
                                  {.temperature = 10.0f, .repetition_penalty = 1.3f, .seed = 4},
                                  {.temperature = 10.0f, .seed = 5}};
  for (size_t i = 0; i < std::size(modes); ++i) {
    GenerationRequest request;
    request.prompt = {5, 9, 14, 3, static_cast<int32_t>(7 + i), 11};
    request.sampling = modes[i];
    request.max_new_tokens = 12;
    requests.push_back(request);
  }
  requests[3].logits_processor = std::make_shared<ForbidTokens>(std::vector<int32_t>{}, /*forbid_all=*/true);
  auto run = [&](int sampling_threads) {
    GeneratorOptions options;
    options.backend.num_threads = 1;
    options.sampling_threads = sampling_threads;
    auto generator = Generator::create(tiny.model(), options);
    REQUIRE(generator.is_ok());
    std::vector<int64_t> ids;
    for (const GenerationRequest& request : requests) ids.push_back((*generator)->add(request).value());
    std::vector<std::vector<int32_t>> tokens(ids.size());
    for (int step = 0; step < 100 && !(*generator)->idle(); ++step) {
      auto produced = (*generator)->step();
      REQUIRE(produced.is_ok());
      for (const StepToken& token : *produced) {
        const auto index = std::find(ids.begin(), ids.end(), token.sequence_id) - ids.begin();
        if (token.token >= 0) tokens[index].push_back(token.token);
      }
    }
    REQUIRE((*generator)->idle());
    CHECK((*generator)->stats().sampling_seconds > 0);
    return tokens;
  };
  const std::vector<std::vector<int32_t>> alone = run(1), spread = run(3);
  CHECK(spread == alone);
  CHECK(alone[0].size() == 12);
  CHECK(alone[3].empty());      // the constraint ended it before its first token
  CHECK(alone[0] != alone[5]);  // the seeds matter: the check above could tell rows apart
}

TEST_CASE("a logits processor constrains every sampled token, and one that allows nothing ends the sequence") {
  TinyModel tiny;
  GenerationRequest request;
  request.prompt = {5, 9, 14, 3, 7, 11, 2, 8};
  request.max_new_tokens = 6;
  auto free_run = Generator::create(tiny.model(), {});
  REQUIRE(free_run.is_ok());
  const std::vector<int32_t> unconstrained = run_to_end(**free_run, (*free_run)->add(request).value());
  REQUIRE(unconstrained.size() == 6);

  auto processor = std::make_shared<ForbidTokens>(unconstrained);  // every token the free run chose
  request.logits_processor = processor;
  auto constrained_run = Generator::create(tiny.model(), {});
  REQUIRE(constrained_run.is_ok());
  const std::vector<int32_t> constrained = run_to_end(**constrained_run, (*constrained_run)->add(request).value());
  REQUIRE(constrained.size() == 6);
  for (int32_t token : constrained) {
    CHECK(std::find(unconstrained.begin(), unconstrained.end(), token) == unconstrained.end());
  }
  CHECK(processor->seen_lengths == std::vector<size_t>{8, 9, 10, 11, 12, 13});

  request.logits_processor = std::make_shared<ForbidTokens>(std::vector<int32_t>{}, /*forbid_all=*/true);
  auto blocked_run = Generator::create(tiny.model(), {});
  REQUIRE(blocked_run.is_ok());
  FinishReason finish = FinishReason::kNone;
  CHECK(run_to_end(**blocked_run, (*blocked_run)->add(request).value(), &finish).empty());
  CHECK(finish == FinishReason::kConstraint);
}

}  // namespace
}  // namespace recgpt
