#include "kv_transfer/nccl/nccl_connection.h"

#include <algorithm>
#include <thread>

namespace recgpt::kv::nccl {
namespace {

// A communicator of two ranks, ready, or an error (and nothing left behind).
Result<ncclComm_t> join_communicator(const ncclUniqueId& id, int rank, Deadline deadline) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that a peer that never joins costs a deadline, not a hang
  ncclComm_t comm = nullptr;
  ncclResult_t started = ncclCommInitRankConfig(&comm, 2, id, rank, &config);
  Status ready = nccl_status(started, "ncclCommInitRankConfig");
  if (ready.is_ok())
    ready = wait_until_ready(comm, deadline, "joining the NCCL communicator as rank " + std::to_string(rank));
  if (ready.is_ok()) return comm;
  if (comm != nullptr) ncclCommAbort(comm);
  return ready;
}

// Rank 1 sends one byte of scratch memory to rank 0 and both wait for it, up to the deadline.
Status exchange_byte(const Channel& channel, int rank, void* scratch, Deadline deadline) {
  ncclResult_t posted = rank == 1 ? ncclSend(scratch, 1, ncclUint8, 0, channel.comm, channel.stream)
                                  : ncclRecv(scratch, 1, ncclUint8, 1, channel.comm, channel.stream);
  RECGPT_RETURN_IF_ERROR(nccl_status(posted, "the first byte to the peer", channel.comm));
  RECGPT_RETURN_IF_ERROR(wait_until_ready(channel.comm, deadline, "launching the first byte"));
  for (auto pause = std::chrono::microseconds(20);; pause = std::min(pause * 2, std::chrono::microseconds(1000))) {
    cudaError_t queried = cudaStreamQuery(channel.stream);
    if (queried == cudaSuccess) return Status::ok();
    if (queried != cudaErrorNotReady) return cuda_status(queried, "the first byte to the peer");
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(channel.comm, &state);
    if (state != ncclSuccess && state != ncclInProgress) return nccl_status(state, "the first byte", channel.comm);
    if (Clock::now() >= deadline) return deadline_exceeded("the peer did not take the first byte before the deadline");
    std::this_thread::sleep_for(pause);
  }
}

}  // namespace

Result<Channel> open_channel(const ncclUniqueId* id, int rank, void* scratch, Deadline deadline) {
  Channel channel;
  channel.uses_nccl = id != nullptr;
  RECGPT_RETURN_IF_ERROR(
      cuda_status(cudaStreamCreateWithFlags(&channel.stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  Status opened = Status::ok();
  if (id != nullptr) {
    Result<ncclComm_t> comm = join_communicator(*id, rank, deadline);
    opened = comm.status();
    if (opened.is_ok()) {
      channel.comm = *comm;
      opened = exchange_byte(channel, rank, scratch, deadline);
    }
  }
  if (opened.is_ok()) return channel;
  if (channel.comm != nullptr) ncclCommAbort(channel.comm);
  cudaStreamDestroy(channel.stream);
  return opened;
}

Status check_device_range(const std::byte* base, uint64_t bytes, int device) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, base) != cudaSuccess || attributes.type != cudaMemoryTypeDevice ||
      attributes.device != device) {
    cudaGetLastError();
    return invalid_argument("the region key names memory that is not on this engine's CUDA device");
  }
  RECGPT_ASSIGN_OR_RETURN(AllocationPosition position, locate_allocation(base));
  if (bytes > position.allocation_bytes - position.offset) {
    return invalid_argument("the region key's range runs past the end of its CUDA allocation");
  }
  return Status::ok();
}

Connection::~Connection() {
  std::lock_guard lock(mutex);
  CudaDeviceGuard device(device_);
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
  CudaDeviceGuard device(device_);
  for (Channel* channel : {&outgoing, &incoming}) {
    if (channel->comm != nullptr) ncclCommAbort(channel->comm);
    channel->comm = nullptr;
    channel->ready = false;
  }
  // IPC copies run on this GPU without the peer: they finish, and only then are the peer's mappings closed.
  if (outgoing.stream != nullptr) cudaStreamSynchronize(outgoing.stream);
  for (auto& [handle, base] : opened_allocations) cudaIpcCloseMemHandle(base);
  opened_allocations.clear();
  // What already landed is still delivered (a writer that notifies and then exits is the common case).
  size_t landed = 0;
  while (landed < notifications.size() &&
         (notifications[landed].landed == nullptr || cudaEventQuery(notifications[landed].landed) == cudaSuccess)) {
    ++landed;
  }
  for (size_t i = landed; i < notifications.size(); ++i) cudaEventDestroy(notifications[i].landed);
  notifications.resize(landed);
  cudaGetLastError();  // an aborted stream's error is this connection's, not the next caller's
}

Status Connection::install_locked(Channel& channel, ncclComm_t comm, cudaStream_t stream, bool uses_nccl) {
  CudaDeviceGuard device(device_);
  if (!failure_.is_ok()) {
    if (comm != nullptr) ncclCommAbort(comm);
    if (stream != nullptr) cudaStreamDestroy(stream);
    return failure_;
  }
  if (channel.comm != nullptr) ncclCommAbort(channel.comm);
  if (channel.stream != nullptr) {
    cudaStreamSynchronize(channel.stream);  // IPC copies of the replaced channel (local work)
    cudaStreamDestroy(channel.stream);
  }
  channel = Channel{true, uses_nccl, comm, stream};
  return Status::ok();
}

BatchHandle::~BatchHandle() {
  CudaDeviceGuard device(connection_->device());
  cudaEventDestroy(done_);
}

TransferState BatchHandle::poll() {
  std::lock_guard lock(mutex_);
  return poll_locked();
}

TransferState BatchHandle::poll_locked() {
  if (state_ != TransferState::kPending) return state_;
  std::lock_guard connection_lock(connection_->mutex);
  CudaDeviceGuard device(connection_->device());
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
