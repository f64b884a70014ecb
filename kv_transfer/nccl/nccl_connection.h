// Internal to kv_transfer's nccl backend: one connection between two engines, both directions, and the
// handle of a write batch on it.
//
// A direction is a Channel: the writer's side of an NCCL communicator of two ranks (writer 1, receiver 0) and
// a stream, or, between engines on the same GPU, only a stream on which the writer copies through CUDA IPC.
// Threading: every member is guarded by `mutex`, which is never held across a wait on the peer: communicator
// set-up waits on a local communicator, then installs it, and a new channel exchanges one byte with the peer
// before it is installed, so that NCCL's lazy connection set-up is done and later launches are local work.
// A failed connection stays failed: its communicators are aborted (ncclCommAbort stops kernels waiting on the
// peer); notifications whose receives had landed stay deliverable, the others are dropped.
#pragma once

#include <array>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>

#include "kv_transfer/nccl/cuda_calls.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv::nccl {

struct Channel {
  bool ready = false;
  bool uses_nccl = false;  // false: same GPU, the writer copies through CUDA IPC
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
};

// A stream, and with `id` a ready communicator of two ranks (this engine is `rank`; writers are 1) that has moved
// one byte of `scratch` (device memory) between them, so that NCCL's lazy connection to the peer is made here,
// not in a later launch; or an error, and nothing left behind. Call with the engine's device current.
Result<Channel> open_channel(const ncclUniqueId* id, int rank, void* scratch, Deadline deadline);

// kInvalidArgument unless [base, base + bytes) lies in one allocation of CUDA device `device`.
Status check_device_range(const std::byte* base, uint64_t bytes, int device);

struct QueuedNotification {
  Bytes message;
  cudaEvent_t landed = nullptr;  // on the incoming stream after the receives before it; null: nothing to wait for
};

class Connection {
 public:
  Connection(int device, uint64_t remote_uuid) : device_(device), remote_uuid_(remote_uuid) {}
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int device() const { return device_; }
  uint64_t remote_uuid() const { return remote_uuid_; }

  std::mutex mutex;
  Channel outgoing;  // this engine writes
  Channel incoming;  // the peer writes
  std::deque<QueuedNotification> notifications;
  std::map<std::array<unsigned char, kIpcHandleBytes>, void*> opened_allocations;  // the peer's, through IPC
  bool peer_in_process = false;  // the peer is an engine of this process (set on connecting)
  bool connecting = false;       // a connect() is setting up `outgoing`; others wait on `connected`
  std::condition_variable connected;
  bool control_closed = false;  // the control connection was dropped after a failure

  // ok while the connection lives; the failure once it failed. Also fails it on an NCCL asynchronous error.
  Status check_locked();
  const Status& failure_locked() const { return failure_; }
  // Fails the connection (first reason wins). Once it returns, no operation of this connection can touch
  // memory any more: communicators aborted, the outgoing stream drained of IPC copies, mappings closed.
  void fail_locked(Status why);
  // Makes `comm` and `stream` the channel (replacing one the peer set up before: a writer that connects again).
  // On failure, aborts `comm` and destroys `stream`.
  Status install_locked(Channel& channel, ncclComm_t comm, cudaStream_t stream, bool uses_nccl);

 private:
  int device_;
  uint64_t remote_uuid_;
  Status failure_;
};

// The completion of a write batch: an event recorded on the outgoing stream after its sends or copies.
class BatchHandle final : public TransferHandle {
 public:
  BatchHandle(std::shared_ptr<Connection> connection, cudaEvent_t done)
      : connection_(std::move(connection)), done_(done) {}
  ~BatchHandle() override;
  TransferState poll() override;
  Status wait(Deadline deadline) override;
  void cancel() override;
  Status status() override;

 private:
  TransferState poll_locked();

  std::mutex mutex_;  // taken before the connection's
  std::shared_ptr<Connection> connection_;
  cudaEvent_t done_;
  TransferState state_ = TransferState::kPending;
  Status error_;
};

}  // namespace recgpt::kv::nccl
