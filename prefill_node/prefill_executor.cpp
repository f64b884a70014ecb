#include "prefill_node/prefill_executor.h"

#include <algorithm>
#include <limits>

#include "engine/block_hash.h"

namespace recgpt::prefill {

PrefillExecutor::PrefillExecutor(const ModelConfig& config, Backend& backend, KvCache& cache, bool prefix_caching)
    : config_(config),
      backend_(backend),
      cache_(cache),
      prefix_caching_(prefix_caching),
      logits_(backend.logits_memory()) {}

Result<PrefillPlan> PrefillExecutor::plan(const PrefillInput& input) {
  if (input.prompt.empty()) return invalid_argument("prompt is empty");
  if (static_cast<int64_t>(input.prompt.size()) >= config_.max_position_embeddings) {
    return invalid_argument("prompt of " + std::to_string(input.prompt.size()) +
                            " tokens does not fit the context of " + std::to_string(config_.max_position_embeddings));
  }
  RECGPT_RETURN_IF_ERROR(validate_tokens(input.prompt, input.entity_vectors.size(), config_));
  RECGPT_RETURN_IF_ERROR(input.sampling.validate(config_.vocab_size));
  const int32_t entity_token = config_.entity_adaptor ? config_.entity_adaptor->entity_token_id : -1;
  const int64_t entity_dim = config_.entity_adaptor ? config_.entity_adaptor->entity_dim : 0;
  PrefillPlan plan;
  int64_t entity = 0;
  for (int32_t token : input.prompt) {
    uint64_t key = 0;
    if (token == entity_token) {
      if (!input.entity_keys.empty() && entity >= static_cast<int64_t>(input.entity_keys.size())) {
        return invalid_argument("entity_keys must have one key per entity token");
      }
      key = input.entity_keys.empty()
                ? entity_key_from_vector(input.entity_vectors.subspan(entity * entity_dim, entity_dim))
                : input.entity_keys[entity];
      ++entity;
    }
    plan.token_entity_keys.push_back(key);
  }
  if (!input.entity_keys.empty() && entity != static_cast<int64_t>(input.entity_keys.size())) {
    return invalid_argument("entity_keys must have one key per entity token");
  }
  const int size = block_size();
  const auto prompt_size = static_cast<int64_t>(input.prompt.size());
  plan.block_hashes = compute_block_hashes(input.prompt, plan.token_entity_keys, size);
  BlockManager& blocks = cache_.blocks();
  PrefixMatch match;
  const int64_t reusable = std::min<int64_t>(static_cast<int64_t>(plan.block_hashes.size()), (prompt_size - 1) / size);
  if (prefix_caching_ && reusable > 0) match = blocks.match_prefix(std::span(plan.block_hashes).first(reusable));
  Result<std::vector<int32_t>> fresh = blocks.allocate((prompt_size + size - 1) / size - match.num_blocks());
  if (!fresh.is_ok()) {
    blocks.release(match.blocks);
    return fresh.status();
  }
  plan.cached_tokens = match.num_blocks() * size;
  plan.computed_tokens = plan.cached_tokens;
  plan.blocks = std::move(match.blocks);
  plan.blocks.insert(plan.blocks.end(), fresh->begin(), fresh->end());
  return plan;
}

Result<PrefillOutcome> PrefillExecutor::compute(const PrefillInput& input, PrefillPlan& plan,
                                                const std::function<Status(int32_t layer)>& after_layer) {
  const PrefillChunk chunk{&input, &plan, static_cast<int64_t>(input.prompt.size()) - plan.computed_tokens};
  RECGPT_ASSIGN_OR_RETURN(std::vector<std::optional<PrefillOutcome>> outcomes,
                          compute_chunks(std::span(&chunk, 1), after_layer));
  return *outcomes.front();
}

Result<std::vector<std::optional<PrefillOutcome>>> PrefillExecutor::compute_chunks(
    std::span<const PrefillChunk> chunks, const std::function<Status(int32_t layer)>& after_layer) {
  const int32_t entity_token = config_.entity_adaptor ? config_.entity_adaptor->entity_token_id : -1;
  const auto entity_dim = static_cast<size_t>(config_.entity_adaptor ? config_.entity_adaptor->entity_dim : 0);
  Batch batch;
  for (const PrefillChunk& chunk : chunks) {
    const PrefillInput& input = *chunk.input;
    const PrefillPlan& plan = *chunk.plan;
    RECGPT_CHECK(!plan.released);
    const int64_t begin = plan.computed_tokens;
    if (chunk.tokens <= 0 || begin + chunk.tokens > static_cast<int64_t>(input.prompt.size())) {
      return invalid_argument("a prefill chunk of " + std::to_string(chunk.tokens) + " tokens from position " +
                              std::to_string(begin) + " does not fit a prompt of " +
                              std::to_string(input.prompt.size()));
    }
    const std::span<const int32_t> tokens =
        input.prompt.subspan(static_cast<size_t>(begin), static_cast<size_t>(chunk.tokens));
    const auto entities_before =
        static_cast<size_t>(std::count(input.prompt.begin(), input.prompt.begin() + begin, entity_token));
    const auto entities_in = static_cast<size_t>(std::count(tokens.begin(), tokens.end(), entity_token));
    const bool last = plan.computed_tokens + chunk.tokens == static_cast<int64_t>(input.prompt.size());
    batch.sequences.push_back(
        {tokens, input.entity_vectors.subspan(entities_before * entity_dim, entities_in * entity_dim),
         static_cast<int32_t>(begin), plan.blocks, last ? LogitsWanted::kLast : LogitsWanted::kNone});
  }
  Status hook_failure = Status::ok();
  if (after_layer) {
    batch.after_layer = [&](int32_t layer) {
      if (hook_failure.is_ok()) hook_failure = after_layer(layer);
    };
  }
  RECGPT_RETURN_IF_ERROR(backend_.forward(batch, cache_, logits_));
  RECGPT_RETURN_IF_ERROR(hook_failure);
  std::vector<std::optional<PrefillOutcome>> outcomes(chunks.size());
  size_t row_index = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const PrefillInput& input = *chunks[i].input;
    PrefillPlan& plan = *chunks[i].plan;
    plan.computed_tokens += chunks[i].tokens;
    if (!plan.complete(input)) continue;
    std::span<float> row = std::span(logits_).subspan(row_index++ * static_cast<size_t>(config_.vocab_size),
                                                      static_cast<size_t>(config_.vocab_size));
    std::optional<LogprobRecorder> recorder;
    if (input.sampling.logprobs) recorder.emplace().record(row);  // the model's own row, before any mask
    if (entity_token >= 0) row[static_cast<size_t>(entity_token)] = -std::numeric_limits<float>::infinity();
    mask_early_stop_tokens(row, input.stop_tokens, input.sampling.first_draw, input.sampling.min_tokens);
    // A constraint allows a first token whenever it has a choice (checked when the request was prepared).
    if (input.logits_processor) input.logits_processor->process(row, input.prompt);
    Sampler sampler(input.sampling);
    PrefillOutcome outcome;
    outcome.first_token = sampler.sample(row, input.prompt);
    if (recorder) outcome.first_token_logprobs = recorder->read(outcome.first_token, input.sampling.top_logprobs);
    outcome.tokens_cached = plan.cached_tokens;
    outcome.tokens_computed = static_cast<int64_t>(input.prompt.size()) - plan.cached_tokens;
    if (prefix_caching_) {
      for (size_t b = 0; b < plan.block_hashes.size(); ++b)
        cache_.blocks().register_block(plan.block_hashes[b], plan.blocks[b]);
    }
    outcomes[i] = outcome;
  }
  return outcomes;
}

void PrefillExecutor::release(PrefillPlan& plan) {
  if (plan.released) return;
  cache_.blocks().release(plan.blocks);
  plan.blocks.clear();
  plan.released = true;
}

}  // namespace recgpt::prefill
