// Which prefill attempts' KV streams ended on this decode node. A thread takes every notification of the node's
// transfer engine (nothing else may wait on it): a KV stream named node::kv_stream_id({N, A}) is the router's
// A-th prefill attempt into reservation N, and its `completed` means that attempt's KV is in the blocks, because a
// backend delivers a notification only after the writes sent before it (kv_transfer/transfer_engine.h).
//
// StartDecode waits for the `completed` of the attempt it names: the router's PrefillDone says only that the
// prefill node's writes left it, which over a network transport (UCX active messages over tcp) can be before
// this node has handled them; and a late `completed` of an attempt the router gave up on must not stand in for
// it. The blocks' write fences (write_fences.h) wait for the other attempts to be over: their stream ended here
// (`completed` or `aborted`), or their writer died: the peer that said it `started` the stream, or, for an attempt
// whose `started` has not come, the prefill node's engine the router named (sent(): TransferEngine::watch finds
// the peer the engine has for it, so that engine's death is seen as a started writer's is; ucx knows only the
// engines it is in contact with, which is every prefill node that wrote here before). A dead writer writes nothing
// more, and what it sent before it died lands within kGoneWriterGrace.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/status.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::decode {

struct KvArrivalCounters {
  uint64_t completed = 0;        // `completed` notifications of prefill attempts
  uint64_t aborted = 0;          // `aborted` ones (a prefill attempt failed; a retry may still fill the blocks)
  uint64_t started = 0;          // `started` ones
  uint64_t ignored = 0;          // notifications that are not of a KV stream into a reservation
  uint64_t writers_died = 0;     // attempts over because their writer died before their stream ended
  uint64_t writers_watched = 0;  // watches of a named writer's engine (TransferEngine::watch)
  uint64_t timed_out = 0;        // landing waits that reached their deadline
  uint64_t ends_timed_out = 0;   // waits for attempts' ends that reached their deadline
};

class KvArrivals {
 public:
  using Landed = std::function<void(Status)>;
  using Ended = std::function<void(bool all_ended)>;

  // Attempts end `gone_writer_grace` after their writer was found dead. The engine must outlive this.
  explicit KvArrivals(kv::TransferEngine& engine, std::chrono::milliseconds gone_writer_grace = kGoneWriterGrace);
  ~KvArrivals();  // waits still open get kUnavailable
  KvArrivals(const KvArrivals&) = delete;
  KvArrivals& operator=(const KvArrivals&) = delete;

  // `landed(ok)` once prefill attempt `attempt`'s KV arrived in the reservation (at once, on this thread, if it
  // already did); kUnavailable when that attempt aborted; kDeadlineExceeded at `deadline`; the engine's error as
  // soon as its notifications cannot be taken (receive_status); kUnavailable while stopping. Otherwise on the
  // arrivals thread. Each arrival opens one wait.
  void when_landed(uint64_t reservation, uint32_t attempt, kv::Deadline deadline, Landed landed);
  // `ended(true)` once every one of `attempts` of the reservation is over here (its `completed` or `aborted`
  // came, or its writer died; at once, on this thread, if they all are), `ended(false)` at `deadline` or while
  // stopping. Not ended by forget(): a cancelled reservation's attempts may still be writing.
  void when_ended(uint64_t reservation, std::vector<uint32_t> attempts, kv::Deadline deadline, Ended ended);
  // The router sent prefill attempt `attempt` of the reservation to the prefill node whose transfer engine is at
  // `writer` (control.proto, PrefillAttempt): while the attempt's `started` has not come, a wait for its end
  // watches that engine (none when `writer` is empty).
  void sent(uint64_t reservation, uint32_t attempt, kv::Bytes writer);
  // The highest attempt of the reservation that sent() named and no wait took yet (0: none).
  uint32_t attempts_sent(uint64_t reservation) const;
  // The reservation ended (cancelled, or its connection closed): its ended streams are dropped, and a landing
  // wait for it ends now with kFailedPrecondition rather than at its deadline.
  void forget(uint64_t reservation);

  KvArrivalCounters counters() const;
  // ok while the engine's notifications can be taken; its error while its last wait for them failed (e.g. a copy
  // into staged device memory was lost: nothing pushed here can be trusted then).
  Status receive_status() const;

  // How long the thread blocks in wait_notification(): the latency of deadlines and of destruction.
  static constexpr std::chrono::milliseconds kPollSlice{20};
  // Ends nobody waited for (their reservation expired after the KV came, or a late attempt ended after its
  // fence lapsed) are dropped after this long: longer than a reservation may live (decode_server.cpp: 10
  // minutes) plus the wait.
  static constexpr std::chrono::minutes kRetention{15};
  // As DecodeCore::kLateWriteGrace: what a writer sent before it died has landed by then.
  static constexpr std::chrono::seconds kGoneWriterGrace{5};
  // A watch of a writer's engine that could not tell is tried again after this.
  static constexpr std::chrono::seconds kWatchRetry{2};

 private:
  using StreamKey = std::pair<uint64_t, uint32_t>;  // (reservation, attempt)
  struct Stream {
    std::optional<kv::PeerId> writer;                     // from its `started`, or from a watch of writer_endpoint
    std::optional<bool> completed;                        // its end: completed, or aborted
    kv::Clock::time_point at;                             // of the last notification (or sent())
    bool sent = false;                                    // sent() named it
    kv::Bytes writer_endpoint;                            // from sent()
    kv::Clock::time_point next_watch;                     // not before: the last watch could not tell
    std::optional<kv::Clock::time_point> writer_gone_at;  // when the writer was first found dead
  };
  struct LandingWaiter {
    StreamKey stream;
    kv::Deadline deadline;
    Landed landed;
  };
  struct EndsWaiter {
    uint64_t reservation = 0;
    std::vector<uint32_t> open;  // the attempts whose end has not come yet
    kv::Deadline deadline;
    Ended ended;
  };

  void run();
  void record(const kv::Notification& notification);
  // Whether the stream's writer died gone_writer_grace_ ago; watches a named writer not known yet. Under mutex_.
  bool writer_gone(Stream& stream, kv::Clock::time_point now);
  // The result of a landing wait if it ends now; takes the end it consumed. Under mutex_.
  std::optional<Status> landing_result(const LandingWaiter& waiter, kv::Clock::time_point now);
  // Takes the attempts of `waiter.open` that are over; true once none is open. Under mutex_.
  bool take_ends(EndsWaiter& waiter, kv::Clock::time_point now);
  // The answers of the waits that end now (to call outside the lock); drops stale ends.
  std::vector<std::function<void()>> take_resolved(kv::Clock::time_point now);

  kv::TransferEngine& engine_;
  const std::chrono::milliseconds gone_writer_grace_;
  mutable std::mutex mutex_;
  std::map<StreamKey, Stream> streams_;  // streams heard of here that no wait has taken yet
  std::vector<LandingWaiter> landing_;
  std::vector<EndsWaiter> ending_;
  KvArrivalCounters counters_;
  Status receive_status_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after every other member exists
};

}  // namespace recgpt::decode
