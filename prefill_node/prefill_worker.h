// The prefill node's engine side: one thread owning the backend, the KV cache (this node's prefix cache) and the
// transfer engine's connections to decode nodes. Requests queue up; each step runs one forward over up to a
// token budget of the requests in progress, oldest first (FIFO: none starves), a long prompt a chunk at a time
// (chunked prefill): a step's work and activation memory stay bounded, deadlines are checked between chunks,
// and the prompts behind a long one share its last step. The step that computes a prompt's last
// chunk pushes the prompt's KV to its decode node's reserved blocks layer by layer as it computes; then the
// stream is finished and the request answered.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "common/status.h"
#include "engine/backend.h"
#include "engine/entity_store.h"
#include "engine/kv_cache.h"
#include "engine/prefix_index_journal.h"
#include "kv_transfer/transfer_engine.h"
#include "prefill_node/prefill_executor.h"
#include "prefill_node/prefill_worker_limits.h"
#include "proto/control.pb.h"

namespace recgpt {
class ModelFiles;
}

namespace recgpt::node {
class Constraints;
}

namespace recgpt::prefill {

class PrefillWorker {
 public:
  using Done = std::function<void(Result<control::PrefillDone>)>;  // runs on the worker thread
  // Set by the submitter once nobody waits for the answer (the caller cancelled the request, or its connection
  // closed): the request is dropped, with kFailedPrecondition, at the worker's next turn if it still waits for
  // compute, else before its next step, instead of computing and pushing KV nobody will decode; in its last step,
  // it stops waiting for its writes to land. A dropped request's decode node is told its KV stream ended
  // (`aborted`).
  using Abandoned = std::shared_ptr<const std::atomic<bool>>;

  PrefillWorker(const ModelFiles& model, std::unique_ptr<Backend> backend, std::unique_ptr<KvCache> cache,
                std::unique_ptr<kv::TransferEngine> transfer, std::optional<EntityStore> entities,
                std::unique_ptr<node::Constraints> constraints, PrefillWorkerLimits limits = {});
  ~PrefillWorker();  // answers what is still queued with kUnavailable, then joins the thread

  Status register_cache();
  void submit(control::PrefillRequest request, Done done, Abandoned abandoned = nullptr);

  bool busy() const { return pending_.load() > 0; }        // a request is queued or running
  int64_t pending() const { return pending_.load(); }      // requests queued or running
  int64_t computing() const { return computing_.load(); }  // of those, in the steps being run (admitted)
  const KvCache& cache() const { return *cache_; }
  int64_t used_blocks() const { return used_blocks_.load(); }  // held by requests in progress
  PrefixIndexJournal& prefix_journal() { return journal_; }    // thread-safe
  int64_t batches() const { return batches_.load(); }          // forwards (steps) run so far
  int64_t dropped() const { return dropped_.load(); }          // requests dropped as abandoned so far

 private:
  struct Job;
  struct Submission {
    control::PrefillRequest request;
    Done done;
    Abandoned abandoned;
    bool announced = false;  // its decode node was told this node will write it (announce())
  };
  // Where a waiting request's KV will go, copied out of the queue to announce it without the lock.
  struct Announcement {
    std::string decode_endpoint;
    std::string decode_region_key;
    uint64_t reservation_id = 0;
    uint32_t attempt = 0;
    kv::Deadline deadline;
  };

  void run();
  void run_step();
  Status prepare(Job& job);
  // Sends a request still waiting for compute its KV stream's `started`, so that its decode node knows which peer
  // will write it (a prepared request's writer sends it itself): the node's write fences then end when this
  // node dies, not at the reservation's deadline. Best effort.
  void announce(const Announcement& announcement);
  // Sends `aborted` for the KV stream of a request that ends before any of its writes (it never got a writer):
  // the decode node's write fences wait for the end of every attempt the router sent. Best effort; connects to
  // the decode node first if needed (for at most 1 s).
  void end_unwritten_stream(const control::PrefillRequest& request);
  void answer(Job& job, const PrefillOutcome* outcome);
  // The connection to a decode node and its imported KV region, made once (within `deadline` and 5 s) and kept;
  // kUnavailable at once for 10 s after one could not be made (refused, or no answer in the whole 5 s).
  Result<std::pair<kv::PeerId, kv::RemoteRegionId>> decode_destination(std::string_view endpoint,
                                                                       std::string_view region_key,
                                                                       kv::Deadline deadline);

  const ModelFiles& model_;
  std::optional<EntityStore> entities_;
  std::unique_ptr<node::Constraints> constraints_;
  std::unique_ptr<Backend> backend_;
  PrefixIndexJournal journal_;  // before cache_: outlives its block manager
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<kv::TransferEngine> transfer_;
  PrefillExecutor executor_;
  const PrefillWorkerLimits limits_;
  kv::LocalRegionId region_ = 0;
  // By endpoint + key; failed ones go when a new one is made.
  std::map<std::string, std::pair<kv::PeerId, kv::RemoteRegionId>> destinations_;
  struct Unreachable {
    kv::Clock::time_point until;  // requests for it fail at once until then
    Status why;
  };
  std::map<std::string, Unreachable> unreachable_;  // by endpoint + key
  std::atomic<int64_t> used_blocks_ = 0;
  std::atomic<int64_t> pending_ = 0;
  std::atomic<int64_t> computing_ = 0;
  std::atomic<int64_t> batches_ = 0;
  std::atomic<int64_t> dropped_ = 0;
  std::vector<std::unique_ptr<Job>> active_;  // prepared, computing a chunk per step; the worker thread's own
  // Bare notifications in flight (`started` of waiting requests, `aborted` of unwritten streams); the worker
  // thread's own.
  std::vector<std::unique_ptr<kv::TransferHandle>> notices_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Submission> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace recgpt::prefill
