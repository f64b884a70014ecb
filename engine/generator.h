// Generator: runs many sequences through one model with continuous batching and a paged, prefix-shared KV
// cache. Each step() builds one Batch: a decode token for every running sequence, then prompt chunks of
// waiting sequences within a token budget (chunked prefill), samples one token per sequence that finished
// its prompt, and returns the new tokens.
//
// Threading: not thread-safe; one owner thread (the engine step loop) calls everything.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/logits_processor.h"
#include "engine/model_config.h"
#include "engine/sampler.h"
#include "engine/token_logprobs.h"

namespace recgpt {

class EntityStore;
class ModelFiles;
class ThreadPool;

struct GeneratorOptions {
  int block_size = 16;
  int64_t kv_cache_bytes = 512LL << 20;  // the KV pool, all layers, K and V
  DType kv_dtype = DType::kF32;
  int64_t max_batch_tokens = 2048;  // tokens per step: decode tokens first, then prompt chunks
  bool prefix_caching = true;
  BackendOptions backend;
  std::string backend_name = "cpu";
  // Threads that sample a step's logit rows, the step thread among them: 0 takes the backend's thread count
  // (backend.num_threads, itself 0 for one per available core); 1 samples on the step thread alone.
  int sampling_threads = 0;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  std::vector<float> entity_vectors;  // [number of entity tokens in prompt, entity_dim], in prompt order
  std::vector<uint64_t> entity_keys;  // optional, one per entity token (e.g. entity_key_from_id); default:
                                      // keys from the vectors, so identical entities share cached blocks
  SamplingParams sampling;
  int32_t max_new_tokens = 16;
  std::vector<int32_t> stop_tokens;                   // generation ends after emitting one of these
  std::shared_ptr<LogitsProcessor> logits_processor;  // optional constraint, applied before each sampling
};

// Fills request.entity_vectors and request.entity_keys for the prompt's entity tokens from `store`, one id per
// entity token in prompt order; the key of each is entity_key_from_id, so the same entity shares cached blocks
// across requests. kNotFound naming an unknown id; kInvalidArgument when the count or the store's dim is wrong.
Status attach_entities_by_id(GenerationRequest& request, const ModelConfig& config, const EntityStore& store,
                             std::span<const std::string> entity_ids);

enum class FinishReason { kNone, kLength, kStopToken, kContextFull, kOutOfKvBlocks, kCancelled, kConstraint };

struct StepToken {
  int64_t sequence_id;
  int32_t token;        // -1 when the sequence ended without a token (out of KV blocks, cancelled)
  FinishReason finish;  // kNone while the sequence goes on
  // The token's log-probabilities when its request asked (sampling.logprobs), else none.
  std::optional<TokenLogprobs> logprobs = std::nullopt;
};

struct GeneratorStats {
  int64_t prompt_tokens_computed = 0;
  int64_t prompt_tokens_cached = 0;
  int64_t generated_tokens = 0;
  int64_t constrained_steps = 0;  // tokens sampled under a logits processor
  double constraint_seconds = 0;  // spent in logits processors (mask time)
  double sampling_seconds = 0;    // spent drawing tokens from logit rows, across the sampling threads (wall time)
};

class Generator {
 public:
  static Result<std::unique_ptr<Generator>> create(const ModelFiles& model, const GeneratorOptions& options);
  ~Generator();

  // Queues a request; blocks for its prompt are reserved lazily (admission happens in step()).
  // Invalid requests (empty prompt, bad token ids, entity count mismatch, too long) are rejected here.
  Result<int64_t> add(GenerationRequest request);

  // Adds a sequence whose prompt KV another node computed (disaggregated decode): `block_table` holds the
  // prompt's KV in its leading blocks (and may hold blocks for the decode budget after them); the generator
  // takes over one reference of each block. `first_token` is the token the prefill node sampled; decoding goes on
  // from it. The prompt's full blocks enter the prefix index. kInvalidArgument (and no reference taken) for an
  // invalid request, a block table too short for the prompt, a max_new_tokens that leaves nothing to decode, or
  // a prompt with entity tokens but no entity_keys (this node needs no vectors, only their keys).
  // The sequence's sampler starts one output after the request's first_draw (the prefill node's draw), so a
  // seeded non-greedy sequence gives the tokens a colocated run of it gives.
  Result<int64_t> add_prefilled(GenerationRequest request, std::vector<int32_t> block_table, int32_t first_token);

  // Adds a sequence that computes its own prompt into blocks reserved for it beforehand (a decode node that
  // prefills locally when no prefill node can): `block_table` is the whole table as add_prefilled takes it, and
  // its leading `cached_tokens` (whole blocks, before the prompt's last token) already hold this prompt's KV.
  // The rest is computed in the steps that follow, in chunks, like a prompt add() admitted. The generator takes
  // over one reference of each block; on error none is taken.
  Result<int64_t> add_reserved(GenerationRequest request, std::vector<int32_t> block_table, int64_t cached_tokens);

  // Ends a sequence and returns its blocks. Unknown ids are ignored.
  void cancel(int64_t sequence_id);

  // Runs one forward step. Returns the tokens produced (possibly none while prompts are being chunked).
  Result<std::vector<StepToken>> step();

  bool idle() const { return sequences_.empty(); }
  int64_t num_running() const;
  const GeneratorStats& stats() const { return stats_; }
  const KvCache& kv_cache() const { return *kv_cache_; }
  // The decode node reserves blocks in this cache's BlockManager and registers its memory for transfers.
  KvCache& kv_cache() { return *kv_cache_; }
  const ModelFiles& model() const { return model_; }
  Backend& backend() { return *backend_; }

  // Logits [prompt.size(), vocab] of every prompt position in one step, without caching or sampling.
  Result<HostLogits> score(std::span<const int32_t> prompt, std::span<const float> entity_vectors);

 private:
  struct Sequence;

  Generator(const ModelFiles& model, const GeneratorOptions& options, std::unique_ptr<KvCache> kv_cache,
            std::unique_ptr<Backend> backend);

  // What one step runs: the batch, the sequence of each batch entry, and the token budget left.
  struct StepPlan {
    Batch batch;
    std::vector<Sequence*> sequences;
    int64_t budget = 0;
  };

  // A validated sequence for `request` (prompt, entity keys), not yet queued.
  Result<std::unique_ptr<Sequence>> make_sequence(GenerationRequest request, bool needs_vectors);
  void schedule_decodes(StepPlan& plan, std::vector<StepToken>& produced);
  void schedule_prompts(StepPlan& plan, std::vector<StepToken>& produced);
  void sample_next_tokens(const StepPlan& plan, std::vector<StepToken>& produced);
  void finish(Sequence& sequence, int32_t token, FinishReason reason, std::vector<StepToken>& produced,
              std::optional<TokenLogprobs> logprobs = std::nullopt);
  int64_t entity_dim() const;
  Status admit(Sequence& sequence);
  // kInvalidArgument unless `block_table` holds live blocks for the whole prompt, any indexed ones this prompt's.
  Status check_block_table(const Sequence& sequence, std::span<const int32_t> block_table) const;
  bool ensure_blocks(Sequence& sequence, int64_t end_position);
  void register_full_blocks(Sequence& sequence);
  void release(Sequence& sequence);

  const ModelFiles& model_;
  GeneratorOptions options_;
  std::unique_ptr<KvCache> kv_cache_;
  std::unique_ptr<Backend> backend_;
  std::vector<std::unique_ptr<Sequence>> sequences_;  // in arrival order
  int64_t next_sequence_id_ = 1;
  GeneratorStats stats_;
  HostLogits logits_;  // in the backend's logits memory
  // A logit row to sample and the token drawn from it; an empty row when the sequence's constraint allowed nothing.
  struct Draw {
    Sequence* sequence;
    std::span<float> row;
    int32_t token;
    std::optional<TokenLogprobs> logprobs;  // when the sequence asked for them
  };
  std::vector<Draw> draws_;                    // this step's, reused
  std::unique_ptr<ThreadPool> sampling_pool_;  // null: sampling on the step thread
};

}  // namespace recgpt
