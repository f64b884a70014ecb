// The decode node's engine side. One thread owns the Generator (its KV cache and continuous batch) and the
// reservations; the network side hands it work through thread-safe calls and gets answers through callbacks,
// which run on the engine thread (a caller re-posts them to its own executor).
//
// Lifecycle of one agent call here: reserve (admission, blocks for prompt + budget) -> the prefill node fills
// the blocks -> start (the reservation becomes a running sequence from the prefill's first token) -> tokens
// stream to the sink until a stop token, the budget, or cancel. When no prefill node can take the call, start
// may compute the prompt here instead (prefill_locally), into the same reservation: the colocated fallback.
// A reservation not started by its deadline expires; cancel works at any stage; destruction ends everything.
// Every path returns the blocks, once no prefill node may still write them (write_fences.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "decode_node/reservation_table.h"
#include "decode_node/write_fences.h"
#include "engine/generator.h"
#include "engine/prefix_index_journal.h"

namespace recgpt::decode {

struct ReserveRequest {
  std::vector<int32_t> prompt;
  std::vector<uint64_t> entity_keys;  // one per entity token of the prompt
  int32_t max_new_tokens = 0;
  Clock::time_point expires;
};

struct StartRequest {
  uint64_t reservation_id = 0;
  int32_t first_token = -1;  // sampled by the prefill node; unused when prefilling locally
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;
  // The colocated fallback: compute the prompt's uncached tokens into the reservation here, then decode; the
  // stream starts with the first token. Needs the prompt's entity vectors ([entities, entity_dim]).
  bool prefill_locally = false;
  std::vector<float> entity_vectors = {};
  // The call's decoding constraint for a prompt of the given length (node/constraints.h), or empty.
  std::function<std::shared_ptr<LogitsProcessor>(size_t prompt_tokens)> constraint = {};
};

// Tokens of one step for one sequence, with their logprobs when its sampling asked (one per token, else none);
// `finish` is kNone while it goes on, and the last call has it set.
using TokenSink =
    std::function<void(std::vector<int32_t> tokens, std::vector<TokenLogprobs> logprobs, FinishReason finish)>;
using ReserveDone = std::function<void(Result<Reservation>)>;
// The seconds between two consecutive tokens of a sequence, once per token after its first (a sequence prefilled
// elsewhere counts from its start here): the inter-token latency. Runs on the engine thread.
using TokenGapObserver = std::function<void(double seconds)>;

struct DecodeCounters {
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;  // by reservations and running sequences
  int64_t reservations = 0;
  int64_t running = 0;
  int64_t reservations_expired = 0;
  int64_t prompt_tokens_cached = 0;             // reported by reservations as already held here
  int64_t prompt_tokens_prefilled_locally = 0;  // computed here by started reservations (prefill_locally)
  int64_t constrained_steps = 0;                // tokens sampled under a constraint
  double constraint_seconds = 0;                // spent masking logits for them
  double sampling_seconds = 0;                  // spent drawing tokens from logits (wall time of the step thread)
  int64_t kv_blocks_fenced = 0;                 // kept from reuse while a prefill attempt may write them
  int64_t fences_lapsed = 0;                    // fences released by time, not by their writers' ends
};

class DecodeCore {
 public:
  static Result<std::unique_ptr<DecodeCore>> create(const ModelFiles& model, const GeneratorOptions& options,
                                                    TokenGapObserver on_token_gap = {});
  ~DecodeCore();  // ends every reservation and sequence (sinks get kCancelled), then stops the thread

  // The cache whose memory the transfer engine registers (stable for the core's life). Read its layout only.
  KvCache& kv_cache() { return generator_->kv_cache(); }

  void reserve(ReserveRequest request, ReserveDone done);
  // kNotFound (through the sink, finish kCancelled with no tokens) when the reservation is not live.
  void start(StartRequest request, TokenSink sink);
  // Ends the reservation or the sequence started from it, whichever is live; unknown ids are ignored.
  void cancel(uint64_t reservation_id);

  // Prefill attempts the router gave up on may still write the reservation's prompt blocks: from here on they
  // stay out of reuse, whatever ends the reservation, until release_fence() with the returned id or the
  // reservation's deadline plus kLateWriteGrace (a prefill node stops writing at that deadline). Call it before
  // the start or cancel that ends the reservation (commands run in order); nothing is held when the reservation
  // is no longer live. An expired reservation's prompt blocks are fenced for kLateWriteGrace by itself.
  uint64_t fence(uint64_t reservation_id);
  void release_fence(uint64_t fence_id);
  // A prefill node's writes submitted in its last compute step before its deadline, and still in flight.
  static constexpr std::chrono::seconds kLateWriteGrace{5};

  // A snapshot the engine thread refreshes at the end of each turn: an answer (a reservation, a stream's end)
  // can reach its caller just before the counters show its effect.
  DecodeCounters counters() const;
  // The changes of this node's prefix index, for LoadReports. Thread-safe.
  PrefixIndexJournal& prefix_journal() { return journal_; }

 private:
  DecodeCore(std::unique_ptr<Generator> generator, TokenGapObserver on_token_gap);
  void run();
  void step_batch();
  // A taken reservation's sequence as the generator `added` it (or its blocks back and kCancelled on error).
  // `has_first_token`: its first token came with it (prefilled elsewhere), so its next one is an inter-token gap.
  void start_running(uint64_t reservation_id, TokenSink sink, Result<int64_t> added, const std::vector<int32_t>& blocks,
                     bool has_first_token);

  struct Running {
    uint64_t reservation_id = 0;
    TokenSink sink;
    std::optional<Clock::time_point> last_token_at;
  };
  struct Pending {
    std::vector<int32_t> prompt;
    std::vector<uint64_t> entity_keys;
    int32_t max_new_tokens = 0;
  };

  PrefixIndexJournal journal_;  // before generator_: outlives its block manager
  std::unique_ptr<Generator> generator_;
  std::unique_ptr<ReservationTable> reservations_;
  std::unique_ptr<WriteFences> fences_;  // engine thread only
  const TokenGapObserver on_token_gap_;
  std::atomic<uint64_t> next_fence_id_{1};

  mutable std::mutex mutex_;  // commands_, stopping_, counters_
  std::condition_variable wake_;
  std::deque<std::function<void()>> commands_;
  bool stopping_ = false;
  DecodeCounters counters_;

  // Engine thread only.
  std::unordered_map<uint64_t, Pending> pending_;      // by reservation id
  std::unordered_map<int64_t, Running> running_;       // by sequence id
  std::unordered_map<uint64_t, int64_t> sequence_of_;  // reservation id -> sequence id
  std::thread thread_;
};

}  // namespace recgpt::decode
