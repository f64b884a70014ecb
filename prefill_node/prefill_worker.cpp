#include "prefill_node/prefill_worker.h"

#include <algorithm>

#include "engine/block_hash.h"
#include "engine/model_files.h"
#include "kv_transfer/kv_stream.h"
#include "node/constraints.h"
#include "node/entity_inputs.h"
#include "node/node_protocol.h"

namespace recgpt::prefill {
namespace {

constexpr std::chrono::milliseconds kDefaultDeadline(30000);
constexpr std::chrono::milliseconds kMaxDeadline(600000);
// Connecting to a decode node blocks the worker thread (and every request behind it): for at most this long, and
// for at most 1 s only to say that a stream ends unwritten (end_unwritten_stream).
constexpr std::chrono::milliseconds kConnectTimeout(5000);
constexpr std::chrono::milliseconds kEndNoticeConnectTimeout(1000);
// After a decode node could not be reached, requests bound for it fail at once for this long (a dead node with no
// reset to say so would otherwise cost each of them the connect timeout, one after another).
constexpr std::chrono::milliseconds kUnreachableFor(10000);

kv::Deadline deadline_of(const control::PrefillRequest& request) {
  return node::deadline_from_unix_ms(request.deadline_unix_ms(), kDefaultDeadline, kMaxDeadline);
}

Status abandoned_failure() {
  return failed_precondition("the prefill request was dropped: its caller cancelled it or went away");
}

bool is_abandoned(const PrefillWorker::Abandoned& abandoned) { return abandoned != nullptr && abandoned->load(); }

}  // namespace

// One request through a batch. Its input views its own vectors: a Job never moves once prepared.
struct PrefillWorker::Job {
  control::PrefillRequest request;
  Done done;
  Abandoned abandoned;
  bool announced = false;  // its Submission's
  kv::Deadline deadline;
  std::vector<int32_t> prompt;
  std::vector<float> entity_vectors;
  std::vector<uint64_t> entity_keys;
  PrefillInput input;
  std::optional<PrefillPlan> plan;
  std::unique_ptr<kv::KvStreamWriter> writer;
  uint64_t kv_bytes = 0;
  Status failure;  // the first error: the job answers it
  bool answered = false;

  int64_t remaining_tokens() const {
    return plan.has_value() ? static_cast<int64_t>(prompt.size()) - plan->computed_tokens : request.token_ids_size();
  }
};

PrefillWorker::PrefillWorker(const ModelFiles& model, std::unique_ptr<Backend> backend, std::unique_ptr<KvCache> cache,
                             std::unique_ptr<kv::TransferEngine> transfer, std::optional<EntityStore> entities,
                             std::unique_ptr<node::Constraints> constraints, PrefillWorkerLimits limits)
    : model_(model),
      entities_(std::move(entities)),
      constraints_(std::move(constraints)),
      backend_(std::move(backend)),
      cache_(std::move(cache)),
      transfer_(std::move(transfer)),
      executor_(model.config(), *backend_, *cache_),
      limits_(limits) {
  cache_->blocks().set_journal(&journal_);
  thread_ = std::thread([this] { run(); });
}

PrefillWorker::~PrefillWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

Status PrefillWorker::register_cache() {
  RECGPT_ASSIGN_OR_RETURN(region_, transfer_->register_memory(node::kv_cache_region(*cache_)));
  return Status::ok();
}

void PrefillWorker::submit(control::PrefillRequest request, Done done, Abandoned abandoned) {
  ++pending_;
  {
    std::lock_guard lock(mutex_);
    queue_.push_back({std::move(request), std::move(done), std::move(abandoned)});
  }
  wake_.notify_all();
}

void PrefillWorker::run() {
  for (;;) {
    std::vector<Submission> admitted;
    std::vector<Submission> dropped;
    std::vector<Announcement> announcements;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty() || !active_.empty(); });
      if (stopping_) break;
      // Requests abandoned while they waited leave the queue now, wherever they are in it.
      for (auto waiting = queue_.begin(); waiting != queue_.end();) {
        if (!is_abandoned(waiting->abandoned)) {
          ++waiting;
          continue;
        }
        dropped.push_back(std::move(*waiting));
        waiting = queue_.erase(waiting);
      }
      // New requests join while the step's token budget has room (a long one is then computed in chunks).
      int64_t budget = limits_.max_batch_tokens;
      for (const auto& job : active_) budget -= job->remaining_tokens();
      while (!queue_.empty() && static_cast<int>(active_.size() + admitted.size()) < limits_.max_batch_requests &&
             budget > 0) {
        budget -= queue_.front().request.token_ids_size();
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      for (Submission& waiting : queue_) {
        if (waiting.announced || waiting.request.attempt() == 0) continue;
        waiting.announced = true;
        announcements.push_back({waiting.request.decode_transfer_endpoint(), waiting.request.decode_kv_region_key(),
                                 waiting.request.reservation_id(), waiting.request.attempt(),
                                 deadline_of(waiting.request)});
      }
    }
    for (const Announcement& announcement : announcements) announce(announcement);
    std::erase_if(notices_, [](const auto& sent) { return sent->poll() != kv::TransferState::kPending; });
    const auto job_of = [](Submission& submission) {
      auto job = std::make_unique<Job>();
      job->request = std::move(submission.request);
      job->done = std::move(submission.done);
      job->abandoned = std::move(submission.abandoned);
      job->announced = submission.announced;
      return job;
    };
    for (Submission& submission : dropped) {
      std::unique_ptr<Job> job = job_of(submission);
      job->failure = abandoned_failure();
      answer(*job, nullptr);
    }
    // A request this node's cache cannot hold while others run waits for their blocks, first in line.
    std::vector<Submission> deferred;
    for (Submission& submission : admitted) {
      std::unique_ptr<Job> job = job_of(submission);
      job->failure = is_abandoned(job->abandoned) ? abandoned_failure() : prepare(*job);
      if (job->failure.is_ok()) {
        active_.push_back(std::move(job));
      } else if (job->failure.code() == StatusCode::kResourceExhausted && !active_.empty()) {
        deferred.push_back({std::move(job->request), std::move(job->done), std::move(job->abandoned), job->announced});
      } else {
        answer(*job, nullptr);
      }
    }
    if (!deferred.empty()) {
      std::lock_guard lock(mutex_);
      queue_.insert(queue_.begin(), std::make_move_iterator(deferred.begin()), std::make_move_iterator(deferred.end()));
    }
    computing_ = static_cast<int64_t>(active_.size());
    if (!active_.empty()) run_step();
    computing_ = static_cast<int64_t>(active_.size());
    used_blocks_ = cache_->blocks().num_used_blocks();
  }
  for (auto& job : active_) {
    job->failure = unavailable("the prefill node is stopping");
    answer(*job, nullptr);
  }
  active_.clear();
  for (auto& sent : notices_) sent->cancel();
  notices_.clear();
  std::lock_guard lock(mutex_);
  for (Submission& submission : queue_) {
    submission.done(unavailable("the prefill node is stopping"));
    --pending_;
  }
}

void PrefillWorker::run_step() {
  // Oldest first, each the rest of its prompt or what the budget leaves.
  int64_t budget = limits_.max_batch_tokens;
  std::vector<PrefillChunk> chunks;
  std::vector<Job*> stepping;
  std::vector<Job*> finishing;  // their chunk ends the prompt: their layers stream to the decode node now
  const auto now = kv::Clock::now();
  for (auto& job : active_) {
    if (now >= job->deadline) {
      job->failure = deadline_exceeded("the prefill request's deadline passed while it waited for compute");
      continue;
    }
    if (is_abandoned(job->abandoned)) {
      job->failure = abandoned_failure();
      continue;
    }
    const int64_t take = std::min(job->remaining_tokens(), budget);
    if (take <= 0) break;
    budget -= take;
    chunks.push_back({&job->input, &*job->plan, take});
    stepping.push_back(job.get());
    if (take == job->remaining_tokens()) finishing.push_back(job.get());
  }
  std::vector<std::optional<PrefillOutcome>> outcomes;
  if (!chunks.empty()) {
    ++batches_;
    // Earlier chunks' KV waits in this node's blocks and goes with the last chunk's layers. A transfer failure
    // is its job's alone: record it and keep computing for the others.
    Result<std::vector<std::optional<PrefillOutcome>>> computed = executor_.compute_chunks(chunks, [&](int32_t layer) {
      for (Job* job : finishing) {
        if (job->failure.is_ok()) job->failure = job->writer->write_layer(layer);
      }
      return Status::ok();
    });
    if (computed.is_ok()) {
      outcomes = std::move(computed).value();
    } else {
      for (Job* job : stepping) job->failure = computed.status();
    }
  }
  for (size_t i = 0; i < outcomes.size(); ++i) {
    if (outcomes[i].has_value() && stepping[i]->failure.is_ok()) {
      Job* job = stepping[i];
      job->failure = job->writer->finish(job->deadline, [job] { return is_abandoned(job->abandoned); });
      if (job->failure.is_ok()) answer(*job, &*outcomes[i]);
    }
  }
  for (auto& job : active_) {
    if (!job->failure.is_ok()) answer(*job, nullptr);
  }
  std::erase_if(active_, [](const std::unique_ptr<Job>& job) { return job->answered; });
}

// Answers the job once: `outcome` on success, else its failure. Frees its blocks, aborts an unfinished stream.
void PrefillWorker::answer(Job& job, const PrefillOutcome* outcome) {
  if (job.answered) return;
  job.answered = true;
  if (outcome == nullptr) {
    if (job.writer) {
      job.writer->abort();
    } else {
      end_unwritten_stream(job.request);
    }
  }
  if (job.plan.has_value()) executor_.release(*job.plan);
  used_blocks_ = cache_->blocks().num_used_blocks();  // before `done`: its caller reads the count
  if (job.failure.code() == StatusCode::kFailedPrecondition && is_abandoned(job.abandoned)) ++dropped_;
  --pending_;
  if (outcome == nullptr) {
    job.done(job.failure.is_ok() ? internal_error("a prefill request ended without an outcome") : job.failure);
    return;
  }
  control::PrefillDone done;
  done.set_first_token(static_cast<uint32_t>(outcome->first_token));
  if (outcome->first_token_logprobs) {
    node::logprobs_to_proto(*outcome->first_token_logprobs, *done.mutable_first_token_logprobs());
  }
  done.set_tokens_computed(static_cast<uint32_t>(outcome->tokens_computed));
  done.set_tokens_cached(static_cast<uint32_t>(outcome->tokens_cached));
  done.set_kv_bytes_moved(job.kv_bytes);
  job.done(std::move(done));
}

// Parses and checks the request, plans its blocks and opens its KV stream. On error nothing is held.
Status PrefillWorker::prepare(Job& job) {
  const control::PrefillRequest& request = job.request;
  job.deadline = deadline_of(request);
  for (uint32_t token : request.token_ids())
    job.prompt.push_back(static_cast<int32_t>(std::min<uint32_t>(token, INT32_MAX)));
  const int entity_dim = model_.config().entity_adaptor ? model_.config().entity_adaptor->entity_dim : 0;
  RECGPT_ASSIGN_OR_RETURN(
      node::ResolvedEntities entities,
      node::resolve_entities(request.entities(), entity_dim, entities_ ? &*entities_ : nullptr, "prefill"));
  job.entity_vectors = std::move(entities.vectors);
  job.entity_keys = std::move(entities.keys);
  RECGPT_ASSIGN_OR_RETURN(SamplingParams sampling, node::sampling_from_proto(request.sampling()));
  job.input = PrefillInput{job.prompt, job.entity_vectors, job.entity_keys, std::move(sampling), {}, {}};
  for (uint32_t stop : request.sampling().stop_token_ids()) {
    if (stop <= static_cast<uint32_t>(INT32_MAX)) job.input.stop_tokens.push_back(static_cast<int32_t>(stop));
  }
  RECGPT_ASSIGN_OR_RETURN(node::ConstraintMaker constraint, constraints_->maker(request.sampling()));
  if (constraint) {
    job.input.logits_processor = constraint(generation_start(job.prompt.size(), job.input.sampling));
  }

  if (request.attempt() == 0) return invalid_argument("the request names no prefill attempt (1 or more)");
  const auto block_size = static_cast<uint32_t>(executor_.block_size());
  if (request.cached_tokens() % block_size != 0 || request.cached_tokens() >= job.prompt.size()) {
    return invalid_argument("the decode node's cached tokens (" + std::to_string(request.cached_tokens()) +
                            ") must be whole blocks before the prompt's last token");
  }
  const size_t first_block = request.cached_tokens() / block_size;
  const size_t prompt_blocks = (job.prompt.size() + block_size - 1) / block_size;
  if (static_cast<size_t>(request.destination_block_ids_size()) < prompt_blocks - first_block) {
    return invalid_argument("the request names " + std::to_string(request.destination_block_ids_size()) +
                            " destination blocks for " + std::to_string(prompt_blocks - first_block) +
                            " uncached prompt blocks");
  }
  RECGPT_ASSIGN_OR_RETURN(auto destination, decode_destination(request.decode_transfer_endpoint(),
                                                               request.decode_kv_region_key(), job.deadline));
  RECGPT_ASSIGN_OR_RETURN(PrefillPlan plan, executor_.plan(job.input));
  job.plan = std::move(plan);
  kv::KvStreamWriterConfig config;
  config.peer = destination.first;
  config.source_region = region_;
  config.source_layout = node::describe_kv_cache(*cache_);
  config.destination_region = destination.second;
  config.destination_layout = node::kv_layout_from_proto(request.decode_kv_layout());
  config.source_blocks.assign(job.plan->blocks.begin() + static_cast<long>(first_block), job.plan->blocks.end());
  for (size_t i = 0; i < prompt_blocks - first_block; ++i) {
    config.destination_blocks.push_back(
        static_cast<int32_t>(std::min<uint32_t>(request.destination_block_ids(static_cast<int>(i)), INT32_MAX)));
  }
  config.request_id = node::kv_stream_id({request.reservation_id(), request.attempt()});
  // The decode node appends its tokens after the prompt's in the last block: only the prompt's rows go there.
  const auto last_block_tokens = static_cast<int>(job.prompt.size() - (prompt_blocks - 1) * block_size);
  config.last_block_tokens = last_block_tokens;
  const uint64_t row_bytes = config.source_layout.block_bytes() / block_size;
  job.kv_bytes = ((config.source_blocks.size() - 1) * block_size + last_block_tokens) * row_bytes * 2 *
                 static_cast<uint64_t>(config.source_layout.num_layers);
  Result<std::unique_ptr<kv::KvStreamWriter>> writer = kv::KvStreamWriter::create(*transfer_, config);
  if (!writer.is_ok()) {
    executor_.release(*job.plan);
    job.plan.reset();
    return writer.status();
  }
  job.writer = std::move(writer).value();
  return Status::ok();
}

Result<std::pair<kv::PeerId, kv::RemoteRegionId>> PrefillWorker::decode_destination(std::string_view endpoint,
                                                                                    std::string_view region_key,
                                                                                    kv::Deadline deadline) {
  const std::string key = std::string(endpoint) + std::string(region_key);
  auto known = destinations_.find(key);
  if (known != destinations_.end() && transfer_->peer_status(known->second.first).is_ok()) return known->second;
  const auto now = kv::Clock::now();
  if (auto failed = unreachable_.find(key); failed != unreachable_.end() && now < failed->second.until)
    return failed->second.why;
  const auto as_bytes = [](std::string_view text) {
    return std::span(reinterpret_cast<const std::byte*>(text.data()), text.size());
  };
  // A connect cut short by the caller's own deadline says nothing about the node: only one given the whole
  // timeout, or refused outright, marks it unreachable.
  const bool whole_timeout = deadline >= now + kConnectTimeout;
  Result<kv::PeerId> peer = transfer_->connect(as_bytes(endpoint), std::min(deadline, now + kConnectTimeout));
  Result<kv::RemoteRegionId> region =
      peer.is_ok() ? transfer_->import_region(*peer, as_bytes(region_key)) : Result<kv::RemoteRegionId>(peer.status());
  if (!region.is_ok() && !whole_timeout && region.status().code() == StatusCode::kDeadlineExceeded) {
    return region.status();
  }
  if (!region.is_ok()) {
    Status why = unavailable("the decode node could not be reached (" + region.status().message() +
                             "); requests for it fail for " + std::to_string(kUnreachableFor.count()) + " ms");
    const auto failed_at = kv::Clock::now();
    std::erase_if(unreachable_, [failed_at](const auto& entry) { return entry.second.until <= failed_at; });
    unreachable_[key] = {failed_at + kUnreachableFor, why};  // kept only as long as it counts: bounded
    return why;
  }
  unreachable_.erase(key);
  // Destinations whose decode node failed go too: a restarted node comes back under a new endpoint, so they would
  // never be asked for again. The map stays bounded by the live ones.
  std::erase_if(destinations_,
                [this](const auto& entry) { return !transfer_->peer_status(entry.second.first).is_ok(); });
  destinations_[key] = {*peer, *region};
  return destinations_[key];
}

void PrefillWorker::announce(const Announcement& announcement) {
  Result<std::pair<kv::PeerId, kv::RemoteRegionId>> destination =
      decode_destination(announcement.decode_endpoint, announcement.decode_region_key, announcement.deadline);
  if (!destination.is_ok()) return;  // prepare() answers the request with this error later
  Result<std::unique_ptr<kv::TransferHandle>> sent = kv::send_started(
      *transfer_, destination->first, node::kv_stream_id({announcement.reservation_id, announcement.attempt}));
  if (sent.is_ok()) notices_.push_back(std::move(sent).value());
}

void PrefillWorker::end_unwritten_stream(const control::PrefillRequest& request) {
  if (request.attempt() == 0) return;  // refused as invalid: no stream of it can exist
  const std::string& endpoint = request.decode_transfer_endpoint();
  const std::string& region_key = request.decode_kv_region_key();
  const kv::Deadline deadline = std::min(deadline_of(request), kv::Clock::now() + kEndNoticeConnectTimeout);
  Result<std::pair<kv::PeerId, kv::RemoteRegionId>> destination = decode_destination(endpoint, region_key, deadline);
  if (!destination.is_ok()) return;
  Result<std::unique_ptr<kv::TransferHandle>> sent = kv::send_unwritten_aborted(
      *transfer_, destination->first, node::kv_stream_id({request.reservation_id(), request.attempt()}));
  if (sent.is_ok()) notices_.push_back(std::move(sent).value());
}

}  // namespace recgpt::prefill
