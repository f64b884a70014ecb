#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "engine/block_hash.h"
#include "engine/cpu/ops.h"
#include "engine/cpu/thread_pool.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"

namespace recgpt {

struct Generator::Sequence {
  int64_t id = 0;
  GenerationRequest request;
  std::vector<int32_t> tokens;        // prompt, then generated tokens
  std::vector<uint64_t> entity_keys;  // one per token of `tokens`, 0 for plain tokens
  std::vector<int64_t> entity_index;  // per prompt token: number of entity tokens before it
  std::vector<int32_t> block_table;
  std::vector<uint64_t> block_hashes;  // hashes of the leading full blocks, registered in the prefix index
  int64_t num_computed = 0;            // tokens whose KV is in the cache
  bool admitted = false;
  bool finished = false;
  int32_t num_generated = 0;
  Sampler sampler;
  std::unique_ptr<LogprobRecorder> logprobs;  // when the request asked for them (sampling.logprobs)

  explicit Sequence(const SamplingParams& params)
      : sampler(params), logprobs(params.logprobs ? std::make_unique<LogprobRecorder>() : nullptr) {}
  int64_t prompt_size() const { return static_cast<int64_t>(request.prompt.size()); }
  bool prefilling() const { return num_computed < prompt_size(); }
  int64_t num_entities() const {
    return entity_index.empty() ? 0 : entity_index.back() + (request.prompt.back() == entity_token ? 1 : 0);
  }
  int32_t entity_token = -1;
};

namespace {

constexpr float kMaskedLogit = -std::numeric_limits<float>::infinity();

int64_t blocks_for(int64_t num_tokens, int block_size) { return (num_tokens + block_size - 1) / block_size; }

}  // namespace

Status attach_entities_by_id(GenerationRequest& request, const ModelConfig& config, const EntityStore& store,
                             std::span<const std::string> entity_ids) {
  if (!config.entity_adaptor) return invalid_argument("the model has no entity adaptor");
  int32_t entity_token = config.entity_adaptor->entity_token_id;
  auto expected = std::count(request.prompt.begin(), request.prompt.end(), entity_token);
  if (static_cast<size_t>(expected) != entity_ids.size()) {
    return invalid_argument("prompt has " + std::to_string(expected) + " entity tokens but " +
                            std::to_string(entity_ids.size()) + " entity ids were given");
  }
  if (store.dim() != config.entity_adaptor->entity_dim) {
    return invalid_argument("entity store '" + store.path() + "' holds vectors of dim " + std::to_string(store.dim()) +
                            ", the model's adaptor takes " + std::to_string(config.entity_adaptor->entity_dim));
  }
  request.entity_vectors.clear();
  request.entity_keys.clear();
  for (const std::string& id : entity_ids) {
    std::optional<std::span<const float>> vector = store.find(id);
    if (!vector) return not_found("entity '" + id + "' is not in the entity store '" + store.path() + "'");
    request.entity_vectors.insert(request.entity_vectors.end(), vector->begin(), vector->end());
    request.entity_keys.push_back(entity_key_from_id(id));
  }
  return Status::ok();
}

Result<std::unique_ptr<Generator>> Generator::create(const ModelFiles& model, const GeneratorOptions& options) {
  const ModelConfig& config = model.config();
  KvCacheConfig cache_config;
  cache_config.num_layers = config.num_hidden_layers;
  cache_config.num_kv_heads = config.num_key_value_heads;
  cache_config.head_dim = config.head_dim;
  cache_config.block_size = options.block_size;
  cache_config.dtype = options.kv_dtype;
  if (options.block_size <= 0) return invalid_argument("block size must be positive");
  cache_config.num_blocks = cache_config.num_blocks_for_budget(options.kv_cache_bytes);
  if (cache_config.num_blocks <= 0) {
    return invalid_argument("KV cache of " + std::to_string(options.kv_cache_bytes) + " bytes holds no block of " +
                            std::to_string(cache_config.bytes_per_block()) + " bytes");
  }
  if (options.max_batch_tokens <= 0) return invalid_argument("max batch tokens must be positive");
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                          create_backend(options.backend_name, model, options.backend));
  RECGPT_ASSIGN_OR_RETURN(KvCache kv_cache, backend->create_kv_cache(cache_config));
  return std::unique_ptr<Generator>(
      new Generator(model, options, std::make_unique<KvCache>(std::move(kv_cache)), std::move(backend)));
}

Generator::Generator(const ModelFiles& model, const GeneratorOptions& options, std::unique_ptr<KvCache> kv_cache,
                     std::unique_ptr<Backend> backend)
    : model_(model),
      options_(options),
      kv_cache_(std::move(kv_cache)),
      backend_(std::move(backend)),
      logits_(backend_->logits_memory()) {
  const int threads =
      ThreadPool::threads_for(options.sampling_threads > 0 ? options.sampling_threads : options.backend.num_threads);
  if (threads > 1) sampling_pool_ = std::make_unique<ThreadPool>(threads, ThreadPool::Blas::kLeave);
}

Generator::~Generator() {
  for (auto& sequence : sequences_) release(*sequence);
}

int64_t Generator::entity_dim() const {
  const ModelConfig& config = model_.config();
  return config.entity_adaptor ? config.entity_adaptor->entity_dim : 0;
}

int64_t Generator::num_running() const {
  return std::count_if(sequences_.begin(), sequences_.end(), [](const auto& s) { return s->admitted; });
}

Result<std::unique_ptr<Generator::Sequence>> Generator::make_sequence(GenerationRequest request, bool needs_vectors) {
  const ModelConfig& config = model_.config();
  if (request.prompt.empty()) return invalid_argument("prompt is empty");
  if (request.max_new_tokens <= 0) return invalid_argument("max_new_tokens must be positive");
  RECGPT_RETURN_IF_ERROR(request.sampling.validate(config.vocab_size));
  if (static_cast<int64_t>(request.prompt.size()) >= config.max_position_embeddings) {
    return invalid_argument("prompt of " + std::to_string(request.prompt.size()) +
                            " tokens does not fit the context of " + std::to_string(config.max_position_embeddings));
  }
  auto sequence = std::make_unique<Sequence>(request.sampling);
  int32_t entity_token = config.entity_adaptor ? config.entity_adaptor->entity_token_id : -1;
  int64_t entity_dim = config.entity_adaptor ? config.entity_adaptor->entity_dim : 0;
  int64_t entities = 0;
  for (int32_t token : request.prompt) {
    sequence->entity_index.push_back(entities);
    if (token == entity_token) ++entities;
  }
  if (needs_vectors) {
    RECGPT_RETURN_IF_ERROR(validate_tokens(request.prompt, request.entity_vectors.size(), config));
  } else {
    RECGPT_RETURN_IF_ERROR(validate_tokens(request.prompt, static_cast<size_t>(entities * entity_dim), config));
    if (entities > 0 && request.entity_keys.empty()) {
      return invalid_argument("a prefilled prompt with entity tokens needs their entity_keys");
    }
  }
  if (!request.entity_keys.empty() && static_cast<int64_t>(request.entity_keys.size()) != entities) {
    return invalid_argument("entity_keys must have one key per entity token");
  }
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    uint64_t key = 0;
    if (request.prompt[i] == entity_token) {
      int64_t entity = sequence->entity_index[i];
      key = request.entity_keys.empty()
                ? entity_key_from_vector(std::span(request.entity_vectors).subspan(entity * entity_dim, entity_dim))
                : request.entity_keys[entity];
    }
    sequence->entity_keys.push_back(key);
  }
  sequence->entity_token = entity_token;
  sequence->tokens = request.prompt;
  sequence->request = std::move(request);
  return sequence;
}

Result<int64_t> Generator::add(GenerationRequest request) {
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Sequence> sequence, make_sequence(std::move(request), true));
  sequence->id = next_sequence_id_++;
  sequences_.push_back(std::move(sequence));
  return sequences_.back()->id;
}

Status Generator::check_block_table(const Sequence& sequence, std::span<const int32_t> block_table) const {
  if (static_cast<int64_t>(block_table.size()) < blocks_for(sequence.prompt_size(), options_.block_size)) {
    return invalid_argument("a block table of " + std::to_string(block_table.size()) +
                            " blocks cannot hold a prompt of " + std::to_string(sequence.prompt_size()) + " tokens");
  }
  const BlockManager& blocks = kv_cache_->blocks();
  for (int32_t block : block_table) {
    if (block < 0 || block >= blocks.num_blocks() || blocks.ref_count(block) == 0) {
      return invalid_argument("block " + std::to_string(block) + " of a reserved sequence is not a held KV block");
    }
  }
  // Leading blocks already in the prefix index must hold this prompt's blocks (a peer's mistake must not
  // make register_full_blocks abort).
  std::vector<uint64_t> hashes =
      compute_block_hashes(sequence.request.prompt, sequence.entity_keys, options_.block_size);
  for (size_t i = 0; i < hashes.size(); ++i) {
    if (blocks.is_registered(block_table[i]) && blocks.registered_hash(block_table[i]) != hashes[i]) {
      return invalid_argument("block " + std::to_string(block_table[i]) + " holds another prefix than this prompt's");
    }
  }
  return Status::ok();
}

Result<int64_t> Generator::add_prefilled(GenerationRequest request, std::vector<int32_t> block_table,
                                         int32_t first_token) {
  const ModelConfig& config = model_.config();
  if (request.max_new_tokens < 2) {
    return invalid_argument("a prefilled sequence needs max_new_tokens >= 2 (its first token is already sampled)");
  }
  if (first_token < 0 || first_token >= config.vocab_size) {
    return invalid_argument("first token " + std::to_string(first_token) + " is outside the vocabulary");
  }
  // The prefill node sampled the first token with the generator's output first_draw: decoding draws after it,
  // as the same sequence prefilled here would (the same seed gives the same tokens either way).
  ++request.sampling.first_draw;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Sequence> sequence, make_sequence(std::move(request), false));
  RECGPT_RETURN_IF_ERROR(check_block_table(*sequence, block_table));
  sequence->id = next_sequence_id_++;
  sequence->block_table = std::move(block_table);
  sequence->num_computed = sequence->prompt_size();
  sequence->admitted = true;
  sequence->tokens.push_back(first_token);
  sequence->entity_keys.push_back(0);
  sequence->num_generated = 1;
  register_full_blocks(*sequence);
  sequences_.push_back(std::move(sequence));
  return sequences_.back()->id;
}

Result<int64_t> Generator::add_reserved(GenerationRequest request, std::vector<int32_t> block_table,
                                        int64_t cached_tokens) {
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Sequence> sequence, make_sequence(std::move(request), true));
  if (cached_tokens < 0 || cached_tokens % options_.block_size != 0 || cached_tokens >= sequence->prompt_size()) {
    return invalid_argument("cached tokens (" + std::to_string(cached_tokens) +
                            ") must be whole blocks before the prompt's last token");
  }
  RECGPT_RETURN_IF_ERROR(check_block_table(*sequence, block_table));
  sequence->id = next_sequence_id_++;
  sequence->block_table = std::move(block_table);
  sequence->num_computed = cached_tokens;
  sequence->admitted = true;
  stats_.prompt_tokens_cached += cached_tokens;
  register_full_blocks(*sequence);
  sequences_.push_back(std::move(sequence));
  return sequences_.back()->id;
}

void Generator::cancel(int64_t sequence_id) {
  auto found = std::find_if(sequences_.begin(), sequences_.end(), [&](const auto& s) { return s->id == sequence_id; });
  if (found == sequences_.end()) return;
  release(**found);
  sequences_.erase(found);
}

// Reserves the blocks of the whole prompt, reusing cached leading blocks. The last prompt token is always
// computed (its logits are needed), so at most (prompt_size - 1) / block_size blocks come from the cache.
Status Generator::admit(Sequence& sequence) {
  int block_size = options_.block_size;
  std::span<const int32_t> prompt = sequence.request.prompt;
  std::vector<uint64_t> hashes = compute_block_hashes(prompt, sequence.entity_keys, block_size);
  int64_t reusable = std::min<int64_t>(static_cast<int64_t>(hashes.size()), (sequence.prompt_size() - 1) / block_size);
  PrefixMatch match;
  if (options_.prefix_caching && reusable > 0) {
    match = kv_cache_->blocks().match_prefix(std::span(hashes).first(reusable));
  }
  int64_t needed = blocks_for(sequence.prompt_size(), block_size) - static_cast<int64_t>(match.blocks.size());
  auto fresh = kv_cache_->blocks().allocate(needed);
  if (!fresh.is_ok()) {
    kv_cache_->blocks().release(match.blocks);
    return fresh.status();
  }
  sequence.block_table = match.blocks;
  sequence.block_table.insert(sequence.block_table.end(), fresh->begin(), fresh->end());
  sequence.block_hashes.assign(hashes.begin(), hashes.begin() + static_cast<int64_t>(match.blocks.size()));
  sequence.num_computed = static_cast<int64_t>(match.blocks.size()) * block_size;
  sequence.admitted = true;
  stats_.prompt_tokens_cached += sequence.num_computed;
  return Status::ok();
}

bool Generator::ensure_blocks(Sequence& sequence, int64_t end_position) {
  int64_t needed = blocks_for(end_position, options_.block_size) - static_cast<int64_t>(sequence.block_table.size());
  if (needed <= 0) return true;
  auto blocks = kv_cache_->blocks().allocate(needed);
  if (!blocks.is_ok()) return false;
  sequence.block_table.insert(sequence.block_table.end(), blocks->begin(), blocks->end());
  return true;
}

void Generator::register_full_blocks(Sequence& sequence) {
  if (!options_.prefix_caching) return;
  int block_size = options_.block_size;
  int64_t full_blocks = sequence.num_computed / block_size;
  while (static_cast<int64_t>(sequence.block_hashes.size()) < full_blocks) {
    size_t index = sequence.block_hashes.size();
    uint64_t parent = index == 0 ? 0 : sequence.block_hashes.back();
    size_t first = index * block_size;
    std::span<const int32_t> tokens = std::span(sequence.tokens).subspan(first, block_size);
    std::span<const uint64_t> keys = std::span(sequence.entity_keys).subspan(first, block_size);
    uint64_t hash = hash_block(parent, tokens, keys);
    sequence.block_hashes.push_back(hash);
    kv_cache_->blocks().register_block(hash, sequence.block_table[index]);
  }
}

void Generator::release(Sequence& sequence) {
  kv_cache_->blocks().release(sequence.block_table);
  sequence.block_table.clear();
  sequence.admitted = false;
}

void Generator::finish(Sequence& sequence, int32_t token, FinishReason reason, std::vector<StepToken>& produced,
                       std::optional<TokenLogprobs> logprobs) {
  produced.push_back({sequence.id, token, reason, std::move(logprobs)});
  release(sequence);
  sequence.finished = true;
}

void Generator::schedule_decodes(StepPlan& plan, std::vector<StepToken>& produced) {
  for (auto& owned : sequences_) {
    Sequence& sequence = *owned;
    if (!sequence.admitted || sequence.prefilling() || plan.budget == 0) continue;
    if (!ensure_blocks(sequence, static_cast<int64_t>(sequence.tokens.size()))) {
      finish(sequence, -1, FinishReason::kOutOfKvBlocks, produced);
      continue;
    }
    plan.batch.sequences.push_back({std::span(sequence.tokens).subspan(sequence.num_computed, 1),
                                    {},
                                    static_cast<int32_t>(sequence.num_computed),
                                    sequence.block_table,
                                    LogitsWanted::kLast});
    plan.sequences.push_back(&sequence);
    --plan.budget;
  }
}

// First come, first served: a prompt that cannot be admitted blocks the ones behind it, so a long prompt is
// not starved by a stream of short ones.
void Generator::schedule_prompts(StepPlan& plan, std::vector<StepToken>& produced) {
  int64_t dim = entity_dim();
  for (auto& owned : sequences_) {
    Sequence& sequence = *owned;
    if (plan.budget == 0) break;
    if (sequence.finished) continue;
    if (!sequence.admitted && !admit(sequence).is_ok()) {
      if (num_running() == 0) finish(sequence, -1, FinishReason::kOutOfKvBlocks, produced);  // can never fit
      break;
    }
    if (!sequence.prefilling()) continue;
    int64_t begin = sequence.num_computed;
    int64_t chunk = std::min(plan.budget, sequence.prompt_size() - begin);
    int64_t end = begin + chunk;
    int64_t entity_begin = sequence.entity_index[begin];
    int64_t entity_end = end < sequence.prompt_size() ? sequence.entity_index[end] : sequence.num_entities();
    plan.batch.sequences.push_back(
        {std::span(sequence.tokens).subspan(begin, chunk),
         std::span(sequence.request.entity_vectors).subspan(entity_begin * dim, (entity_end - entity_begin) * dim),
         static_cast<int32_t>(begin), sequence.block_table,
         end == sequence.prompt_size() ? LogitsWanted::kLast : LogitsWanted::kNone});
    plan.sequences.push_back(&sequence);
    plan.budget -= chunk;
  }
}

void Generator::sample_next_tokens(const StepPlan& plan, std::vector<StepToken>& produced) {
  const ModelConfig& config = model_.config();
  int32_t entity_token = config.entity_adaptor ? config.entity_adaptor->entity_token_id : -1;
  // In step order: each sequence's progress, and each logit row's constraint. A row the constraint leaves
  // nothing in is kept empty: its sequence ends below.
  draws_.clear();
  int64_t logit_row = 0;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    Sequence& sequence = *plan.sequences[i];
    const SequenceStep& step = plan.batch.sequences[i];
    if (sequence.prefilling()) stats_.prompt_tokens_computed += static_cast<int64_t>(step.tokens.size());
    sequence.num_computed += static_cast<int64_t>(step.tokens.size());
    register_full_blocks(sequence);
    if (step.logits == LogitsWanted::kNone) continue;
    std::span<float> row = std::span(logits_).subspan(logit_row * config.vocab_size, config.vocab_size);
    ++logit_row;
    if (sequence.logprobs != nullptr) sequence.logprobs->record(row);  // the model's own row, before any mask
    if (entity_token >= 0) row[entity_token] = kMaskedLogit;  // an entity token needs a vector: never sample one
    mask_early_stop_tokens(row, sequence.request.stop_tokens, sequence.sampler.next_index(),
                           sequence.sampler.params().min_tokens);
    if (sequence.request.logits_processor) {
      const auto start = std::chrono::steady_clock::now();
      sequence.request.logits_processor->process(row, sequence.tokens);
      stats_.constraint_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ++stats_.constrained_steps;
      // Nothing left when every logit is -inf (or NaN): one vector pass, where a scan for a finite logit walks on
      // to the first allowed token (26 us to mid-row against 6 us, Qwen3's vocabulary).
      if (max_value(row.data(), static_cast<int64_t>(row.size())) == kMaskedLogit) row = {};
    }
    draws_.push_back({&sequence, row, -1, std::nullopt});
  }
  // The draws, spread over the sampling pool: each sequence has its own sampler and row, so its token does not
  // depend on which thread drew it, nor on what the others drew.
  auto sample = [this](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      Draw& draw = draws_[j];
      if (draw.row.empty()) continue;
      Sequence& sequence = *draw.sequence;
      draw.token = sequence.sampler.sample(draw.row, sequence.tokens);
      if (sequence.logprobs != nullptr) {
        draw.logprobs = sequence.logprobs->read(draw.token, sequence.sampler.params().top_logprobs);
      }
    }
  };
  const auto draws = static_cast<int64_t>(draws_.size());
  const auto sampling_start = std::chrono::steady_clock::now();
  if (sampling_pool_ != nullptr && draws > 1) {
    sampling_pool_->parallel_for(draws, sample);
  } else {
    sample(0, draws);
  }
  stats_.sampling_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - sampling_start).count();
  // In step order again: the tokens, and the sequences they end.
  for (Draw& draw : draws_) {
    Sequence& sequence = *draw.sequence;
    if (draw.row.empty()) {
      finish(sequence, -1, FinishReason::kConstraint, produced);  // the constraint allows nothing here
      continue;
    }
    const int32_t token = draw.token;
    sequence.tokens.push_back(token);
    sequence.entity_keys.push_back(0);
    ++sequence.num_generated;
    ++stats_.generated_tokens;
    const auto& stops = sequence.request.stop_tokens;
    FinishReason reason = FinishReason::kNone;
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
      reason = FinishReason::kStopToken;
    } else if (sequence.num_generated >= sequence.request.max_new_tokens) {
      reason = FinishReason::kLength;
    } else if (static_cast<int64_t>(sequence.tokens.size()) >= config.max_position_embeddings) {
      reason = FinishReason::kContextFull;
    }
    if (reason == FinishReason::kNone) {
      produced.push_back({sequence.id, token, reason, std::move(draw.logprobs)});
    } else {
      finish(sequence, token, reason, produced, std::move(draw.logprobs));
    }
  }
}

Result<std::vector<StepToken>> Generator::step() {
  std::vector<StepToken> produced;
  StepPlan plan;
  plan.budget = options_.max_batch_tokens;
  schedule_decodes(plan, produced);
  schedule_prompts(plan, produced);
  if (!plan.batch.sequences.empty()) {
    Status status = backend_->forward(plan.batch, *kv_cache_, logits_);
    if (!status.is_ok()) {
      // The step's sequences cannot go on consistently: end them and return their blocks.
      for (Sequence* sequence : plan.sequences) finish(*sequence, -1, FinishReason::kCancelled, produced);
      std::erase_if(sequences_, [](const auto& s) { return s->finished; });
      return status;
    }
  }
  sample_next_tokens(plan, produced);
  std::erase_if(sequences_, [](const auto& s) { return s->finished; });
  return produced;
}

Result<HostLogits> Generator::score(std::span<const int32_t> prompt, std::span<const float> entity_vectors) {
  if (prompt.empty()) return invalid_argument("prompt is empty");
  RECGPT_ASSIGN_OR_RETURN(std::vector<int32_t> blocks, kv_cache_->blocks().allocate(blocks_for(
                                                           static_cast<int64_t>(prompt.size()), options_.block_size)));
  Batch batch;
  batch.sequences.push_back({prompt, entity_vectors, 0, blocks, LogitsWanted::kAll});
  HostLogits logits(backend_->logits_memory());
  Status status = backend_->forward(batch, *kv_cache_, logits);
  kv_cache_->blocks().release(blocks);
  if (!status.is_ok()) return status;
  return logits;
}

}  // namespace recgpt
