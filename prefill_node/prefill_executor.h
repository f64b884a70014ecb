// The prefill node's compute for one prompt (../shared/DESIGN.md §2 step 4): reuse this node's cached prefix,
// compute the rest, hand each layer to the transfer as soon as it is in the cache, sample the first token.
//
// Two phases, so the caller can set up the KV stream between them:
//   plan()    matches this node's prefix cache and allocates the prompt's blocks: the block table is known
//             before any compute (the KvStreamWriter needs the source blocks);
//   compute() runs the uncached tokens through the model, calling `after_layer` as each layer's KV lands,
//             samples the first token, and indexes the prompt's full blocks for later prompts;
//             compute_chunks() does the same for several prompts at once, each a chunk at a time (chunked
//             prefill: a step's work stays bounded however long the prompt);
//   release() returns the plan's blocks (indexed ones stay cached).
// Threading: like the engine, one owner thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"
#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/logits_processor.h"
#include "engine/model_config.h"
#include "engine/sampler.h"
#include "engine/token_logprobs.h"

namespace recgpt::prefill {

struct PrefillInput {
  std::span<const int32_t> prompt;
  std::span<const float> entity_vectors;  // [entity tokens of prompt, entity_dim], in prompt order
  std::span<const uint64_t> entity_keys;  // one per entity token; empty: keys from the vectors
  SamplingParams sampling;
  std::shared_ptr<LogitsProcessor> logits_processor = {};  // the call's constraint on its first token, or null
  std::vector<int32_t> stop_tokens = {};  // the call's: masked for its first token under sampling.min_tokens
};

struct PrefillPlan {
  std::vector<int32_t> blocks;  // covers the whole prompt
  std::vector<uint64_t> block_hashes;
  std::vector<uint64_t> token_entity_keys;  // per prompt token, 0 for plain tokens
  int64_t cached_tokens = 0;                // leading tokens whose KV this node held already
  int64_t computed_tokens = 0;              // leading tokens whose KV is in `blocks` (cached, then computed)
  bool released = false;

  bool complete(const PrefillInput& input) const {
    return computed_tokens == static_cast<int64_t>(input.prompt.size());
  }
};

// The next `tokens` tokens of one prompt, from its plan's computed_tokens. The chunk that reaches the prompt's
// end samples its first token.
struct PrefillChunk {
  const PrefillInput* input = nullptr;
  PrefillPlan* plan = nullptr;
  int64_t tokens = 0;
};

struct PrefillOutcome {
  int32_t first_token = -1;
  std::optional<TokenLogprobs> first_token_logprobs;  // when the request's sampling asked for them
  int64_t tokens_computed = 0;
  int64_t tokens_cached = 0;
};

class PrefillExecutor {
 public:
  PrefillExecutor(const ModelConfig& config, Backend& backend, KvCache& cache, bool prefix_caching = true);

  // kInvalidArgument for a bad prompt (empty, token ids, entity counts, too long); kResourceExhausted when this
  // node's cache cannot hold it now.
  Result<PrefillPlan> plan(const PrefillInput& input);

  // `after_layer(layer)` runs once per layer as soon as that layer's KV of the whole prompt is in the cache; its
  // first error is returned after the forward finishes (the rest of the layers still run). On any error the
  // plan's blocks are not indexed.
  Result<PrefillOutcome> compute(const PrefillInput& input, PrefillPlan& plan,
                                 const std::function<Status(int32_t layer)>& after_layer);

  // Chunks of several prompts in one forward (the prefill node's step): each one's KV lands in its own plan's
  // blocks and advances its computed_tokens; `after_layer(layer)` runs once per layer for all of them. Outcomes
  // in chunk order, set for the chunks that completed their prompt (sampled, blocks indexed). A failure fails
  // them all and leaves every plan as it was (its partial KV is overwritten by a retry).
  // kInvalidArgument for a chunk of no tokens or past its prompt's end.
  Result<std::vector<std::optional<PrefillOutcome>>> compute_chunks(
      std::span<const PrefillChunk> chunks, const std::function<Status(int32_t layer)>& after_layer);

  void release(PrefillPlan& plan);

  int block_size() const { return cache_.config().block_size; }

 private:
  const ModelConfig& config_;
  Backend& backend_;
  KvCache& cache_;
  const bool prefix_caching_;
  HostLogits logits_;  // in the backend's logits memory
};

}  // namespace recgpt::prefill
