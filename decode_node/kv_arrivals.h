// Which reservations' KV has landed on this decode node. A thread takes every notification of the node's
// transfer engine (nothing else may wait on it): a KV stream's `completed` for node::kv_stream_id(N) marks
// reservation N filled, because a backend delivers a notification only after the writes sent before it
// (kv_transfer/transfer_engine.h). StartDecode waits for it: the router's PrefillDone says only that the prefill
// node's writes left it, which over a network transport (UCX active messages over tcp) can be before this node
// has handled them.
//
// Known limit: a prefill attempt the router gave up on may still complete; its `completed` then opens the wait
// of the retry's StartDecode early (the face cannot fence a live writer, kv_stream.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::decode {

struct KvArrivalCounters {
  uint64_t completed = 0;  // `completed` notifications of reservations
  uint64_t aborted = 0;    // `aborted` ones (a prefill attempt failed; a retry may still fill the blocks)
  uint64_t ignored = 0;    // notifications that are not of a KV stream into a reservation
  uint64_t timed_out = 0;  // waits that reached their deadline
};

class KvArrivals {
 public:
  using Landed = std::function<void(Status)>;

  explicit KvArrivals(kv::TransferEngine& engine);  // the engine must outlive it
  ~KvArrivals();                                    // waits still open get kUnavailable
  KvArrivals(const KvArrivals&) = delete;
  KvArrivals& operator=(const KvArrivals&) = delete;

  // `landed(ok)` once reservation's KV arrived (at once, on this thread, if it already did), or
  // `landed(kDeadlineExceeded)` at `deadline`, or the engine's error as soon as its notifications cannot be taken
  // (receive_status), or kUnavailable while stopping; otherwise on the arrivals thread. Each arrival opens one
  // wait.
  void when_landed(uint64_t reservation, kv::Deadline deadline, Landed landed);
  // The reservation ended (cancelled, or its connection closed): its arrival is dropped, and a wait for it ends now
  // with kFailedPrecondition rather than at its deadline.
  void forget(uint64_t reservation);

  KvArrivalCounters counters() const;
  // ok while the engine's notifications can be taken; its error while its last wait for them failed (e.g. a copy
  // into staged device memory was lost: nothing pushed here can be trusted then).
  Status receive_status() const;

  // How long the thread blocks in wait_notification(): the latency of deadlines and of destruction.
  static constexpr std::chrono::milliseconds kPollSlice{20};
  // Arrivals nobody waited for (their reservation expired after the KV came) are dropped after this long: longer
  // than a reservation may live (decode_server.cpp: 10 minutes) plus the wait.
  static constexpr std::chrono::minutes kRetention{15};

 private:
  struct Waiter {
    uint64_t reservation = 0;
    kv::Deadline deadline;
    Landed landed;
  };

  void run();
  void record(const kv::Notification& notification);
  // The waiters whose KV arrived or whose deadline passed, with their results; drops stale arrivals.
  std::vector<std::pair<Landed, Status>> take_resolved(kv::Clock::time_point now);

  kv::TransferEngine& engine_;
  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, kv::Clock::time_point> arrived_;  // reservation -> when its `completed` came
  std::vector<Waiter> waiters_;
  KvArrivalCounters counters_;
  Status receive_status_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after every other member exists
};

}  // namespace recgpt::decode
