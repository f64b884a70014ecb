#include "decode_node/decode_core.h"

#include <algorithm>

#include "engine/block_hash.h"
#include "engine/model_files.h"

namespace recgpt::decode {

constexpr auto kIdleWait = std::chrono::milliseconds(20);

Result<std::unique_ptr<DecodeCore>> DecodeCore::create(const ModelFiles& model, const GeneratorOptions& options,
                                                       TokenGapObserver on_token_gap) {
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Generator> generator, Generator::create(model, options));
  return std::unique_ptr<DecodeCore>(new DecodeCore(std::move(generator), std::move(on_token_gap)));
}

DecodeCore::DecodeCore(std::unique_ptr<Generator> generator, TokenGapObserver on_token_gap)
    : generator_(std::move(generator)),
      reservations_(std::make_unique<ReservationTable>(generator_->kv_cache().blocks(),
                                                       generator_->kv_cache().config().block_size)),
      fences_(std::make_unique<WriteFences>(generator_->kv_cache().blocks())),
      on_token_gap_(std::move(on_token_gap)) {
  counters_.kv_blocks_total = generator_->kv_cache().blocks().num_blocks();
  generator_->kv_cache().blocks().set_journal(&journal_);
  thread_ = std::thread([this] { run(); });
}

DecodeCore::~DecodeCore() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void DecodeCore::reserve(ReserveRequest request, ReserveDone done) {
  std::lock_guard lock(mutex_);
  commands_.push_back([this, request = std::move(request), done = std::move(done)]() mutable {
    const ModelConfig& config = generator_->model().config();
    const int32_t entity_token = config.entity_adaptor ? config.entity_adaptor->entity_token_id : -1;
    std::vector<uint64_t> token_keys;
    size_t entity = 0;
    for (int32_t token : request.prompt) {
      if (token == entity_token && entity >= request.entity_keys.size()) {
        done(invalid_argument("the prompt has more entity tokens than entity keys"));
        return;
      }
      token_keys.push_back(token == entity_token ? request.entity_keys[entity++] : 0);
    }
    if (entity != request.entity_keys.size()) {
      done(invalid_argument("the prompt has fewer entity tokens than entity keys"));
      return;
    }
    const std::vector<uint64_t> hashes =
        compute_block_hashes(request.prompt, token_keys, generator_->kv_cache().config().block_size);
    Result<Reservation> reserved = reservations_->reserve(
        {static_cast<int64_t>(request.prompt.size()), request.max_new_tokens, hashes, request.expires});
    if (reserved.is_ok()) {
      pending_[reserved->id] = {std::move(request.prompt), std::move(request.entity_keys), request.max_new_tokens};
      std::lock_guard counters_lock(mutex_);
      counters_.prompt_tokens_cached += reserved->cached_tokens;
    }
    done(std::move(reserved));
  });
  wake_.notify_all();
}

void DecodeCore::start(StartRequest request, TokenSink sink) {
  std::lock_guard lock(mutex_);
  commands_.push_back([this, request = std::move(request), sink = std::move(sink)]() mutable {
    auto pending = pending_.find(request.reservation_id);
    Result<Reservation> taken = reservations_->take(request.reservation_id);
    if (!taken.is_ok() || pending == pending_.end()) {
      sink({}, {}, FinishReason::kCancelled);
      return;
    }
    GenerationRequest generation;
    generation.prompt = std::move(pending->second.prompt);
    generation.entity_keys = std::move(pending->second.entity_keys);
    generation.max_new_tokens = pending->second.max_new_tokens;
    generation.sampling = request.sampling;
    generation.stop_tokens = request.stop_tokens;
    if (request.constraint) {
      generation.logits_processor = request.constraint(generation_start(generation.prompt.size(), generation.sampling));
    }
    pending_.erase(pending);
    if (request.prefill_locally) {
      generation.entity_vectors = std::move(request.entity_vectors);
      Result<int64_t> added = generator_->add_reserved(std::move(generation), taken->blocks, taken->cached_tokens);
      if (added.is_ok()) {
        std::lock_guard counters_lock(mutex_);
        counters_.prompt_tokens_prefilled_locally += taken->prompt_tokens - taken->cached_tokens;
      }
      start_running(request.reservation_id, std::move(sink), std::move(added), taken->blocks,
                    /*has_first_token=*/false);
      return;
    }
    const std::vector<int32_t> blocks = taken->blocks;
    const bool first_ends =
        generation.max_new_tokens <= 1 || std::find(generation.stop_tokens.begin(), generation.stop_tokens.end(),
                                                    request.first_token) != generation.stop_tokens.end();
    if (first_ends) {  // nothing to decode: the first token was the whole answer
      generator_->kv_cache().blocks().release(blocks);
      sink({}, {}, generation.max_new_tokens <= 1 ? FinishReason::kLength : FinishReason::kStopToken);
      return;
    }
    start_running(request.reservation_id, std::move(sink),
                  generator_->add_prefilled(std::move(generation), blocks, request.first_token), blocks,
                  /*has_first_token=*/true);
  });
  wake_.notify_all();
}

void DecodeCore::start_running(uint64_t reservation_id, TokenSink sink, Result<int64_t> added,
                               const std::vector<int32_t>& blocks, bool has_first_token) {
  if (!added.is_ok()) {  // the generator took no reference: the reservation's go back here
    generator_->kv_cache().blocks().release(blocks);
    sink({}, {}, FinishReason::kCancelled);
    return;
  }
  std::optional<Clock::time_point> first_token_at;
  if (has_first_token) first_token_at = Clock::now();
  running_[*added] = {reservation_id, std::move(sink), first_token_at};
  sequence_of_[reservation_id] = *added;
}

void DecodeCore::cancel(uint64_t reservation_id) {
  std::lock_guard lock(mutex_);
  commands_.push_back([this, reservation_id] {
    if (reservations_->cancel(reservation_id).is_ok()) {
      pending_.erase(reservation_id);
      return;
    }
    auto sequence = sequence_of_.find(reservation_id);
    if (sequence == sequence_of_.end()) return;
    generator_->cancel(sequence->second);
    auto running = running_.find(sequence->second);
    if (running != running_.end()) {
      running->second.sink({}, {}, FinishReason::kCancelled);
      running_.erase(running);
    }
    sequence_of_.erase(sequence);
  });
  wake_.notify_all();
}

uint64_t DecodeCore::fence(uint64_t reservation_id) {
  const uint64_t fence_id = next_fence_id_++;
  std::lock_guard lock(mutex_);
  commands_.push_back([this, reservation_id, fence_id] {
    const Reservation* reservation = reservations_->find(reservation_id);
    if (reservation == nullptr) return;
    fences_->hold(fence_id, reservation->prompt_blocks_to_fill(generator_->kv_cache().config().block_size),
                  reservation->expires + kLateWriteGrace);
  });
  wake_.notify_all();
  return fence_id;
}

void DecodeCore::release_fence(uint64_t fence_id) {
  std::lock_guard lock(mutex_);
  commands_.push_back([this, fence_id] { fences_->release(fence_id); });
  wake_.notify_all();
}

DecodeCounters DecodeCore::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void DecodeCore::run() {
  for (bool stopping = false;;) {
    std::deque<std::function<void()>> commands;
    {
      std::unique_lock lock(mutex_);
      if (commands_.empty() && !stopping_ && generator_->idle()) {
        wake_.wait_until(lock,
                         std::min({reservations_->next_expiry(), fences_->next_lapse(), Clock::now() + kIdleWait}));
      }
      commands.swap(commands_);
      stopping = stopping_;
    }
    for (auto& command : commands) command();  // even when stopping: each answers its caller
    if (stopping) break;
    const auto now = Clock::now();
    const std::vector<uint64_t> expired_ids = reservations_->expire(now, [&](const Reservation& reservation) {
      fences_->hold(next_fence_id_++, reservation.prompt_blocks_to_fill(generator_->kv_cache().config().block_size),
                    now + kLateWriteGrace);
    });
    for (uint64_t id : expired_ids) pending_.erase(id);
    const auto expired = static_cast<int64_t>(expired_ids.size());
    const int64_t lapsed = fences_->release_lapsed(now);
    if (!generator_->idle()) step_batch();
    std::lock_guard lock(mutex_);
    counters_.reservations_expired += expired;
    counters_.fences_lapsed += lapsed;
    counters_.kv_blocks_fenced = fences_->held_blocks();
    counters_.reservations = static_cast<int64_t>(reservations_->size());
    counters_.running = static_cast<int64_t>(running_.size());
    counters_.kv_blocks_used = generator_->kv_cache().blocks().num_used_blocks();
    counters_.constrained_steps = generator_->stats().constrained_steps;
    counters_.constraint_seconds = generator_->stats().constraint_seconds;
    counters_.sampling_seconds = generator_->stats().sampling_seconds;
  }
  // Shutting down: every sequence and reservation ends here, on the thread that owns them.
  for (auto& [sequence, running] : running_) {
    generator_->cancel(sequence);
    running.sink({}, {}, FinishReason::kCancelled);
  }
  running_.clear();
  reservations_.reset();
  fences_.reset();
}

void DecodeCore::step_batch() {
  Result<std::vector<StepToken>> produced = generator_->step();
  if (!produced.is_ok()) {
    // The generator ended the step's sequences and returned their blocks; tell their sinks.
    for (auto it = running_.begin(); it != running_.end();) {
      it->second.sink({}, {}, FinishReason::kCancelled);
      sequence_of_.erase(it->second.reservation_id);
      it = running_.erase(it);
    }
    return;
  }
  std::unordered_map<int64_t, std::vector<int32_t>> tokens;
  std::unordered_map<int64_t, std::vector<TokenLogprobs>> logprobs;
  std::unordered_map<int64_t, FinishReason> finished;
  for (StepToken& token : *produced) {
    if (token.token >= 0) tokens[token.sequence_id].push_back(token.token);
    if (token.token >= 0 && token.logprobs) logprobs[token.sequence_id].push_back(std::move(*token.logprobs));
    if (token.finish != FinishReason::kNone) finished[token.sequence_id] = token.finish;
  }
  const auto now = Clock::now();
  for (auto& [sequence, list] : tokens) {
    auto running = running_.find(sequence);
    if (running == running_.end()) continue;
    std::optional<Clock::time_point>& last = running->second.last_token_at;
    if (last && on_token_gap_) {
      const double each = std::chrono::duration<double>(now - *last).count() / static_cast<double>(list.size());
      for (size_t i = 0; i < list.size(); ++i) on_token_gap_(each);
    }
    last = now;
    auto finish = finished.find(sequence);
    auto listed = logprobs.find(sequence);
    running->second.sink(std::move(list),
                         listed == logprobs.end() ? std::vector<TokenLogprobs>{} : std::move(listed->second),
                         finish == finished.end() ? FinishReason::kNone : finish->second);
  }
  for (auto& [sequence, reason] : finished) {
    auto running = running_.find(sequence);
    if (running == running_.end()) continue;
    if (tokens.count(sequence) == 0) running->second.sink({}, {}, reason);
    sequence_of_.erase(running->second.reservation_id);
    running_.erase(running);
  }
}

}  // namespace recgpt::decode
