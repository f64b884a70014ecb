#include "kv_transfer/nccl/nccl_connection.h"

#include <thread>

namespace recgpt::kv::nccl {

Connection::~Connection() {
  std::lock_guard lock(mutex);
  cudaSetDevice(device_);
  fail_locked(unavailable("the connection was closed"));
  for (Channel* channel : {&outgoing, &incoming}) {
    if (channel->stream != nullptr) cudaStreamDestroy(channel->stream);
    channel->stream = nullptr;
  }
}

Status Connection::check_locked() {
  if (!failure_.is_ok()) return failure_;
  for (ncclComm_t comm : {outgoing.comm, incoming.comm}) {
    if (comm == nullptr) continue;
    ncclResult_t state = ncclSuccess;
    ncclResult_t queried = ncclCommGetAsyncError(comm, &state);
    if (queried == ncclSuccess && (state == ncclSuccess || state == ncclInProgress)) continue;
    fail_locked(nccl_status(queried != ncclSuccess ? queried : state, "the NCCL connection failed", comm));
    break;
  }
  return failure_;
}

void Connection::fail_locked(Status why) {
  if (!failure_.is_ok()) return;
  failure_ = std::move(why);
  cudaSetDevice(device_);
  for (Channel* channel : {&outgoing, &incoming}) {
    if (channel->comm != nullptr) ncclCommAbort(channel->comm);
    channel->comm = nullptr;
    channel->ready = false;
  }
  // IPC copies run on this GPU without the peer: they finish, and only then are the peer's mappings closed.
  if (outgoing.stream != nullptr) cudaStreamSynchronize(outgoing.stream);
  for (auto& [handle, base] : opened_allocations) cudaIpcCloseMemHandle(base);
  opened_allocations.clear();
  for (QueuedNotification& queued : notifications) {
    if (queued.landed != nullptr) cudaEventDestroy(queued.landed);
  }
  notifications.clear();
}

Status Connection::install_locked(Channel& channel, ncclComm_t comm, bool uses_nccl) {
  auto abort_comm = [&comm] {
    if (comm != nullptr) ncclCommAbort(comm);
  };
  if (!failure_.is_ok() || channel.ready) {
    abort_comm();
    return failure_.is_ok() ? failed_precondition("the connection's channel is already set up") : failure_;
  }
  cudaStream_t stream = nullptr;
  Status created = cuda_status(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  if (!created.is_ok()) {
    abort_comm();
    return created;
  }
  channel = Channel{true, uses_nccl, comm, stream};
  return Status::ok();
}

BatchHandle::~BatchHandle() { cudaEventDestroy(done_); }

TransferState BatchHandle::poll() {
  std::lock_guard lock(mutex_);
  return poll_locked();
}

TransferState BatchHandle::poll_locked() {
  if (state_ != TransferState::kPending) return state_;
  std::lock_guard connection_lock(connection_->mutex);
  // The connection first: after an abort, an event behind a killed kernel may read as complete.
  Status alive = connection_->check_locked();
  if (!alive.is_ok()) {
    state_ = TransferState::kFailed;
    error_ = alive;
    return state_;
  }
  cudaError_t queried = cudaEventQuery(done_);
  if (queried == cudaSuccess) {
    state_ = TransferState::kDone;
  } else if (queried != cudaErrorNotReady) {
    state_ = TransferState::kFailed;
    error_ = cuda_status(queried, "the write batch");
    connection_->fail_locked(error_);
  }
  return state_;
}

Status BatchHandle::wait(Deadline deadline) {
  for (auto pause = std::chrono::microseconds(10);; pause = std::min(pause * 2, std::chrono::microseconds(500))) {
    TransferState state = poll();
    if (state == TransferState::kDone) return Status::ok();
    if (state != TransferState::kPending) return status();
    if (Clock::now() >= deadline) return deadline_exceeded("the write batch did not land before the deadline");
    std::this_thread::sleep_for(pause);
  }
}

void BatchHandle::cancel() {
  std::lock_guard lock(mutex_);
  if (poll_locked() != TransferState::kPending) return;
  std::lock_guard connection_lock(connection_->mutex);
  connection_->fail_locked(
      unavailable("a write batch was cancelled (NCCL cannot stop single operations: the connection was closed)"));
  state_ = TransferState::kCancelled;
  error_ = unavailable("cancelled");
}

Status BatchHandle::status() {
  std::lock_guard lock(mutex_);
  poll_locked();
  return error_;
}

}  // namespace recgpt::kv::nccl
