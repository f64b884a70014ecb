// Internal to kv_transfer's ucx backend (included only by ucx_transfer_engine.cpp): the completion of UCX
// requests (Operation), the request parameters that report to it, and the TransferHandle over it.
//
// Threading: see ucx_transfer_engine.cpp. Operation has its own small mutex, always taken after the worker's.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "kv_transfer/transfer_engine.h"
#include "kv_transfer/ucx_worker.h"

namespace recgpt::kv {

// How long a forced endpoint close may take to finish (it needs no answer from the peer).
inline constexpr std::chrono::milliseconds kCloseTimeout(1000);
// How long cancel() waits for requests UCX could not cancel (puts in flight) before it abandons their peer.
inline constexpr std::chrono::milliseconds kCancelGrace(200);

// The completion of a set of UCX requests (a write batch, a flush, a notification). Thread-safe. An operation
// is `open` while requests may still be added to it; it is done once closed with no request pending.
// Always owned by a shared_ptr: the worker keeps the operation alive while UCX holds its requests.
class Operation : public std::enable_shared_from_this<Operation> {
 public:
  // `worker`: the one its requests are issued on.
  explicit Operation(UcxWorker& worker) : worker_(worker) {}

  // Call with the worker's mutex held. `request` is the return value of a *_nbx call whose user_data is this.
  void track(ucs_status_ptr_t request, const std::string& what) {
    if (request == nullptr) return;
    if (UCS_PTR_IS_ERR(request)) {
      fail(ucx_failure(what, UCS_PTR_STATUS(request)));
      return;
    }
    std::lock_guard lock(mutex_);
    requests_.insert(request);
    worker_.pending_operations.try_emplace(this, shared_from_this());
  }

  // Keeps `buffers` (what UCX reads from) alive as long as this operation. Call before its requests are tracked.
  void attach(std::shared_ptr<const void> buffers) { attached_.push_back(std::move(buffers)); }

  // Records the first error; `close` also says no request will be added any more.
  void fail(Status error, bool close = false) {
    {
      std::lock_guard lock(mutex_);
      if (error_.is_ok()) error_ = std::move(error);
      if (close) open_ = false;
    }
    changed_.notify_all();
  }

  void close() {
    {
      std::lock_guard lock(mutex_);
      open_ = false;
    }
    changed_.notify_all();
  }

  // The UCX completion callback of every tracked request (runs with the worker's mutex held, or in its
  // destruction).
  static void on_request_done(void* request, ucs_status_t status, void* user_data) {
    auto* operation = static_cast<Operation*>(user_data);
    std::shared_ptr<void> keep_alive;  // until this returns
    {
      std::lock_guard lock(operation->mutex_);
      operation->requests_.erase(request);
      if (status != UCS_OK && operation->error_.is_ok()) {
        operation->error_ =
            status == UCS_ERR_CANCELED ? unavailable("cancelled") : ucx_failure("a request failed", status);
      }
      if (operation->requests_.empty()) {
        auto pending = operation->worker_.pending_operations.extract(operation);
        if (!pending.empty()) keep_alive = std::move(pending.mapped());
      }
    }
    ucp_request_free(request);
    operation->changed_.notify_all();
  }

  TransferState state() {
    std::lock_guard lock(mutex_);
    return state_locked();
  }

  Status status() {
    std::lock_guard lock(mutex_);
    if (cancelled_) return unavailable("the transfer was cancelled");
    return error_;
  }

  // Waits until nothing is pending (not only until failure: pending requests still touch memory).
  Status wait(Deadline deadline) {
    std::unique_lock lock(mutex_);
    const bool settled = changed_.wait_until(lock, deadline, [this] { return !open_ && requests_.empty(); });
    if (cancelled_) return unavailable("the transfer was cancelled");
    if (!error_.is_ok()) return error_;
    if (!settled) return deadline_exceeded("the transfer did not complete before its deadline");
    return Status::ok();
  }

  // Call with the worker's mutex held: asks UCX to cancel every pending request.
  void cancel_requests(ucp_worker_h worker) {
    std::vector<void*> pending;
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
      open_ = false;
      pending.assign(requests_.begin(), requests_.end());
    }
    changed_.notify_all();
    for (void* request : pending) {
      bool still_pending = false;
      {
        std::lock_guard lock(mutex_);
        still_pending = requests_.count(request) != 0;
      }
      if (still_pending) ucp_request_cancel(worker, request);
    }
  }

  // Whether nothing is pending any more, waiting at most until `deadline`.
  bool wait_idle(Deadline deadline) {
    std::unique_lock lock(mutex_);
    return changed_.wait_until(lock, deadline, [this] { return requests_.empty(); });
  }

 private:
  TransferState state_locked() const {
    if (cancelled_) return TransferState::kCancelled;
    if (!error_.is_ok()) return TransferState::kFailed;
    return !open_ && requests_.empty() ? TransferState::kDone : TransferState::kPending;
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::unordered_set<void*> requests_;
  UcxWorker& worker_;
  std::vector<std::shared_ptr<const void>> attached_;
  Status error_;
  bool open_ = true;
  bool cancelled_ = false;
};

inline ucp_request_param_t request_param(Operation* operation) {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &Operation::on_request_done;
  param.user_data = operation;
  return param;
}

// Set by a handle whose cancelled requests did not stop: the progress thread then closes the peer's endpoint by
// force, which completes every request on it with an error.
using AbandonFlag = std::shared_ptr<std::atomic<bool>>;

class UcxHandle final : public TransferHandle {
 public:
  UcxHandle(std::shared_ptr<UcxWorker> worker, std::shared_ptr<Operation> operation, AbandonFlag abandon_peer)
      : worker_(std::move(worker)), operation_(std::move(operation)), abandon_peer_(std::move(abandon_peer)) {}

  TransferState poll() override { return operation_->state(); }
  Status wait(Deadline deadline) override { return operation_->wait(deadline); }
  Status status() override { return operation_->status(); }

  // UCX cannot cancel puts in flight. When they do not finish within kCancelGrace (a peer that stopped answering,
  // on a transport without failure detection), the peer is abandoned: its endpoint is closed by force, which
  // ends them where the transport supports it, and this returns after at most kCloseTimeout more. Over UCX
  // 1.13's shared-memory transports the requests to a dead peer may stay pending even then; they only read
  // this engine's registered memory (which must stay registered, as the face requires) and are released with
  // the worker.
  void cancel() override {
    {
      std::lock_guard lock(worker_->mutex);
      operation_->cancel_requests(worker_->worker);
    }
    if (abandon_peer_->load()) return;  // another handle gave up on this peer already
    if (operation_->wait_idle(Clock::now() + kCancelGrace)) return;
    abandon_peer_->store(true);
    {
      std::lock_guard lock(worker_->mutex);
      ucp_worker_signal(worker_->worker);
    }
    (void)operation_->wait_idle(Clock::now() + kCloseTimeout);
  }

 private:
  std::shared_ptr<UcxWorker> worker_;
  std::shared_ptr<Operation> operation_;
  AbandonFlag abandon_peer_;
};

}  // namespace recgpt::kv
