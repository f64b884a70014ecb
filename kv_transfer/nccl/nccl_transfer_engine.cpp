// The `nccl` transfer backend: CUDA device memory between GPUs.
//
// NCCL is two-sided, so the face's one-sided writes become matched sends and receives. Every connection has a
// control channel, an inner `ucx` engine (tcp by default), that carries the connection's NCCL unique id, each
// batch's descriptors and the notifications, in order, and tells of a dead peer; the bytes go over a
// communicator of two ranks per direction. Writer W, receiver R:
//   W connect:       control connect; ncclGetUniqueId; kHello{id} to R; joins as rank 1 (non-blocking, polled
//                    until ready or the deadline).
//   R control loop:  kHello -> joins as rank 0.
//   W submit_writes: kWrites{R's region, offset, length per op}, then one group of ncclSend on the connection's
//                    stream and an event the handle polls.
//   R control loop:  kWrites -> checks every range against its regions, one group of ncclRecv in the same
//                    order on its stream.
//   W notify:        kNotify{message}; R queues it behind an event recorded on its stream, so it is delivered
//                    only after every earlier receive landed.
// Engines on the same GPU cannot share a communicator (NCCL refuses two ranks on one device): there kHello says
// so, R's region keys carry CUDA IPC handles, W copies into R's memory itself and sends kNotify only once its
// copies finished. Engines of one process on one GPU write each other's memory directly, the same way.
// Failure: the control loop watches every connection; a peer the control engine reports dead, an NCCL
// asynchronous error or a cancelled batch fails the connection (communicators aborted, notifications dropped,
// handles kUnavailable) and the control connection is dropped, which the peer sees as this engine gone.
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <random>
#include <thread>
#include <unordered_map>

#include "kv_transfer/backends.h"
#include "kv_transfer/nccl/cuda_calls.h"
#include "kv_transfer/nccl/nccl_connection.h"
#include "kv_transfer/nccl/nccl_wire.h"

namespace recgpt::kv {
namespace nccl {
namespace {

constexpr std::chrono::milliseconds kControlPoll(20);        // the control loop's longest sleep
constexpr std::chrono::milliseconds kJoinTimeout(10000);     // a receiver joining a writer's communicator
constexpr std::chrono::milliseconds kLaunchTimeout(10000);   // a group's kernels being enqueued (local work)
constexpr std::chrono::microseconds kNotificationPoll(200);  // while a notification waits for its receives

uint64_t random_uuid() {
  std::random_device device;
  return (uint64_t{device()} << 32) ^ device();
}

std::string peer_label(PeerId peer) { return "peer " + std::to_string(peer); }

Bytes message(MessageType type, uint64_t sender_uuid) {
  Bytes bytes;
  append_wire(bytes, MessageHeader{kMessageMagic, type, sender_uuid});
  return bytes;
}

struct DeviceRegion {
  std::byte* base = nullptr;
  uint64_t bytes = 0;
  RegionKeyWire key;  // what export_region hands out
};

struct ImportedRegion {
  PeerId peer = 0;
  LocalRegionId region_at_peer = 0;
  uint64_t bytes = 0;
  std::byte* mapped = nullptr;  // the peer's memory opened through CUDA IPC (same GPU), else null
};

class NcclTransferEngine final : public TransferEngine {
 public:
  NcclTransferEngine(int device, DeviceLocation location, std::unique_ptr<TransferEngine> control)
      : device_(device), location_(location), control_(std::move(control)) {}

  ~NcclTransferEngine() override {
    stopping_ = true;
    if (control_thread_.joinable()) control_thread_.join();
    std::lock_guard lock(mutex_);
    connections_.clear();  // each fails itself: communicators aborted, mappings closed
    if (scratch_ != nullptr) {
      CudaDeviceGuard guard(device_);
      cudaFree(scratch_);
    }
  }

  Status start() {
    CudaDeviceGuard guard(device_);
    RECGPT_RETURN_IF_ERROR(cuda_status(cudaMalloc(&scratch_, 64), "cudaMalloc of the engine's scratch bytes"));
    RECGPT_ASSIGN_OR_RETURN(control_endpoint_, control_->local_endpoint());
    control_thread_ = std::thread([this] { control_loop(); });
    return Status::ok();
  }

  std::string_view backend_name() const override { return "nccl"; }

  Result<LocalRegionId> register_memory(const MemoryRegion& region) override {
    if (region.base == nullptr || region.bytes == 0) return invalid_argument("cannot register an empty region");
    if (region.kind != MemoryKind::kCuda) {
      return invalid_argument("the nccl backend reaches CUDA device memory only, got host memory");
    }
    CudaDeviceGuard guard(device_);
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, region.base) != cudaSuccess || attributes.type != cudaMemoryTypeDevice ||
        attributes.device != device_) {
      cudaGetLastError();  // clears the error the query may have left
      return invalid_argument("the region is not device memory of CUDA device " + std::to_string(device_) +
                              " (this engine's)");
    }
    RECGPT_ASSIGN_OR_RETURN(AllocationPosition position, locate_allocation(region.base));
    if (region.bytes > position.allocation_bytes - position.offset) {
      return invalid_argument("the region runs past the end of its CUDA allocation");
    }
    DeviceRegion registered{static_cast<std::byte*>(region.base), region.bytes, {}};
    registered.key.bytes = region.bytes;
    registered.key.base_address = reinterpret_cast<uint64_t>(region.base);
    registered.key.offset_in_allocation = position.offset;
    cudaIpcMemHandle_t handle{};
    // Memory IPC cannot share (pools, virtual memory management) still serves peers on other GPUs.
    if (cudaIpcGetMemHandle(&handle, position.allocation_base) == cudaSuccess) {
      std::memcpy(registered.key.ipc_handle, &handle, kIpcHandleBytes);
    } else {
      cudaGetLastError();
    }
    std::lock_guard lock(mutex_);
    const LocalRegionId id = next_region_id_++;  // never reused: a stale key cannot name a newer region
    registered.key.region = id;
    registered.key.engine_uuid = uuid_;
    regions_[id] = registered;
    return id;
  }

  Result<AllocatedRegion> allocate_memory(size_t /*bytes*/) override {
    return unimplemented("the nccl backend moves CUDA device memory: allocate it with cudaMalloc and register it");
  }

  Status deregister_memory(LocalRegionId region) override {
    std::lock_guard lock(mutex_);
    if (regions_.erase(region) == 0) return not_found("region " + std::to_string(region) + " is not registered");
    return Status::ok();
  }

  Result<Bytes> export_region(LocalRegionId region) override {
    std::lock_guard lock(mutex_);
    auto it = regions_.find(region);
    if (it == regions_.end()) return not_found("region " + std::to_string(region) + " is not registered");
    Bytes bytes;
    append_wire(bytes, it->second.key);
    return bytes;
  }

  Result<Bytes> local_endpoint() override {
    Bytes bytes;
    append_wire(bytes, EndpointWire{kEndpointMagic, static_cast<uint32_t>(control_endpoint_.size()), uuid_, location_,
                                    process_token()});
    bytes.insert(bytes.end(), control_endpoint_.begin(), control_endpoint_.end());
    return bytes;
  }

  // The control plane's connection only: no NCCL channel (peer_status() follows the control plane).
  Result<PeerId> watch(std::span<const std::byte> endpoint) override {
    RECGPT_ASSIGN_OR_RETURN(ParsedEndpoint parsed, parse_endpoint(endpoint));
    RECGPT_ASSIGN_OR_RETURN(PeerId peer, control_->watch(parsed.control));
    RECGPT_RETURN_IF_ERROR(connection_for(peer, parsed.wire.engine_uuid).status());
    return peer;
  }

  Result<PeerId> connect(std::span<const std::byte> endpoint, Deadline deadline) override {
    RECGPT_ASSIGN_OR_RETURN(ParsedEndpoint parsed, parse_endpoint(endpoint));
    const EndpointWire& wire = parsed.wire;
    RECGPT_ASSIGN_OR_RETURN(PeerId peer, control_->connect(parsed.control, deadline));
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, connection_for(peer, wire.engine_uuid));
    {
      std::unique_lock lock(connection->mutex);
      // One connect sets the channel up; concurrent ones wait for its outcome.
      if (!connection->connected.wait_until(lock, deadline, [&] { return !connection->connecting; })) {
        return deadline_exceeded("another connect to " + peer_label(peer) + " did not finish before the deadline");
      }
      RECGPT_RETURN_IF_ERROR(connection->check_locked());
      if (connection->outgoing.ready) return peer;
      connection->connecting = true;
      connection->peer_in_process = wire.location == location_ && wire.process_token == process_token();
    }
    Status joined = join_as_writer(peer, *connection, !(wire.location == location_), deadline);
    {
      std::lock_guard lock(connection->mutex);
      connection->connecting = false;
    }
    connection->connected.notify_all();
    // A failed set-up leaves the peer's writes to this engine (the incoming channel) alone.
    if (!joined.is_ok()) return joined.with_context("connecting to " + peer_label(peer));
    return peer;
  }

  Result<RemoteRegionId> import_region(PeerId peer, std::span<const std::byte> key) override {
    WireReader reader(key, "an nccl region key");
    RECGPT_ASSIGN_OR_RETURN(RegionKeyWire wire, reader.read<RegionKeyWire>());
    if (wire.magic != kRegionKeyMagic || !reader.rest().empty()) {
      return invalid_argument("the bytes are not an nccl region key");
    }
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, find_connection(peer));
    if (wire.engine_uuid != connection->remote_uuid()) {
      return invalid_argument("the region key was exported by another engine than " + peer_label(peer));
    }
    ImportedRegion imported{peer, wire.region, wire.bytes, nullptr};
    {
      std::lock_guard lock(connection->mutex);
      RECGPT_RETURN_IF_ERROR(connection->check_locked());
      if (!connection->outgoing.ready) return failed_precondition(peer_label(peer) + " was not connected to");
      if (connection->peer_in_process) {
        imported.mapped = reinterpret_cast<std::byte*>(wire.base_address);  // CUDA IPC refuses its own process
      } else if (!connection->outgoing.uses_nccl) {
        RECGPT_ASSIGN_OR_RETURN(std::byte * allocation, open_allocation_locked(*connection, wire));
        imported.mapped = allocation + wire.offset_in_allocation;
      }
      // This engine writes there itself: the key's range must lie in one allocation of this GPU.
      if (imported.mapped != nullptr) RECGPT_RETURN_IF_ERROR(check_device_range(imported.mapped, wire.bytes, device_));
    }
    std::lock_guard lock(mutex_);
    const RemoteRegionId id = next_remote_region_id_++;
    imports_[id] = imported;
    return id;
  }

  void disconnect(PeerId peer) override {
    std::shared_ptr<Connection> connection;
    {
      std::lock_guard lock(mutex_);
      auto it = connections_.find(peer);
      if (it == connections_.end()) return;
      connection = std::move(it->second);
      connections_.erase(it);
      std::erase_if(imports_, [peer](const auto& entry) { return entry.second.peer == peer; });
    }
    {
      std::lock_guard lock(connection->mutex);
      connection->fail_locked(unavailable(peer_label(peer) + " was disconnected"));
    }
    control_->disconnect(peer);
  }

  Result<std::unique_ptr<TransferHandle>> submit_writes(PeerId peer, std::span<const WriteOp> ops) override {
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, find_connection(peer));
    RECGPT_ASSIGN_OR_RETURN(std::vector<ResolvedOp> resolved, resolve(peer, ops));
    CudaDeviceGuard guard(device_);
    cudaEvent_t done = nullptr;
    RECGPT_RETURN_IF_ERROR(cuda_status(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate"));
    auto handle = std::make_unique<BatchHandle>(connection, done);  // owns the event from here
    std::lock_guard lock(connection->mutex);
    RECGPT_RETURN_IF_ERROR(connection->check_locked());
    Channel& channel = connection->outgoing;
    if (!channel.ready) return failed_precondition(peer_label(peer) + " was not connected to");
    Status launched = Status::ok();
    if (!resolved.empty()) {
      launched = channel.uses_nccl ? send_locked(peer, *connection, resolved) : copy_locked(channel, resolved);
    }
    if (launched.is_ok()) launched = cuda_status(cudaEventRecord(done, channel.stream), "cudaEventRecord");
    if (!launched.is_ok()) {
      connection->fail_locked(launched);
      return launched;
    }
    return std::unique_ptr<TransferHandle>(std::move(handle));
  }

  Result<std::unique_ptr<TransferHandle>> notify(PeerId peer, std::span<const std::byte> text) override {
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, find_connection(peer));
    cudaStream_t copies = nullptr;
    {
      std::lock_guard lock(connection->mutex);
      RECGPT_RETURN_IF_ERROR(connection->check_locked());
      if (!connection->outgoing.ready) return failed_precondition(peer_label(peer) + " was not connected to");
      if (!connection->outgoing.uses_nccl) copies = connection->outgoing.stream;
    }
    // Over IPC this engine writes the peer's memory itself: the copies must have finished before the message
    // leaves. They run on this GPU alone, so the wait is bounded.
    if (copies != nullptr) {
      CudaDeviceGuard guard(device_);
      Status landed = cuda_status(cudaStreamSynchronize(copies), "the copies before a notification");
      if (!landed.is_ok()) {
        std::lock_guard lock(connection->mutex);
        connection->fail_locked(landed);
        return landed;
      }
    }
    Bytes bytes = message(MessageType::kNotify, uuid_);
    bytes.insert(bytes.end(), text.begin(), text.end());
    return control_->notify(peer, bytes);
  }

  Result<std::optional<Notification>> wait_notification(Deadline deadline) override {
    CudaDeviceGuard guard(device_);
    for (;;) {
      bool waiting_on_gpu = false;
      std::unique_lock lock(mutex_);
      for (auto& [peer, connection] : connections_) {
        std::lock_guard connection_lock(connection->mutex);
        if (connection->notifications.empty()) continue;  // a failed one keeps only what landed
        QueuedNotification& front = connection->notifications.front();
        if (front.landed != nullptr) {
          cudaError_t queried = cudaEventQuery(front.landed);
          if (queried == cudaErrorNotReady) {
            waiting_on_gpu = true;
            continue;
          }
          if (queried != cudaSuccess) {
            connection->fail_locked(cuda_status(queried, "receiving from " + peer_label(peer)));
            continue;
          }
          cudaEventDestroy(front.landed);
        }
        Notification delivered{peer, std::move(front.message)};
        connection->notifications.pop_front();
        return std::optional<Notification>(std::move(delivered));
      }
      if (Clock::now() >= deadline) return std::optional<Notification>();
      Deadline wake = waiting_on_gpu ? std::min(deadline, Clock::now() + kNotificationPoll) : deadline;
      notification_queued_.wait_until(lock, wake);
    }
  }

  Status peer_status(PeerId peer) override {
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, find_connection(peer));
    CudaDeviceGuard guard(device_);
    {
      std::lock_guard lock(connection->mutex);
      RECGPT_RETURN_IF_ERROR(connection->check_locked());
    }
    return control_->peer_status(peer);
  }

 private:
  struct ParsedEndpoint {
    EndpointWire wire;
    std::span<const std::byte> control;  // the control plane's endpoint, inside the parsed bytes
  };
  static Result<ParsedEndpoint> parse_endpoint(std::span<const std::byte> endpoint) {
    WireReader reader(endpoint, "an nccl endpoint");
    RECGPT_ASSIGN_OR_RETURN(EndpointWire wire, reader.read<EndpointWire>());
    if (wire.magic != kEndpointMagic) return invalid_argument("the bytes are not an nccl endpoint (bad magic)");
    if (reader.rest().size() != wire.control_bytes) return invalid_argument("an nccl endpoint has a wrong length");
    return ParsedEndpoint{wire, reader.rest()};
  }

  struct ResolvedOp {
    const std::byte* source = nullptr;
    std::byte* mapped_destination = nullptr;  // IPC only
    WriteDescriptorWire descriptor;
  };

  Result<std::shared_ptr<Connection>> find_connection(PeerId peer) {
    std::lock_guard lock(mutex_);
    auto it = connections_.find(peer);
    if (it == connections_.end()) return unavailable(peer_label(peer) + " is not connected");
    return it->second;
  }

  // The connection of a control peer, made on first use. The control engine gives one PeerId per remote
  // engine, so a writer connecting back to its receiver shares this connection.
  Result<std::shared_ptr<Connection>> connection_for(PeerId peer, uint64_t remote_uuid) {
    std::lock_guard lock(mutex_);
    std::shared_ptr<Connection>& connection = connections_[peer];
    if (connection == nullptr) connection = std::make_shared<Connection>(device_, remote_uuid);
    if (connection->remote_uuid() != remote_uuid) {
      return invalid_argument(peer_label(peer) + " changed identity (engine uuid)");
    }
    return connection;
  }

  Status join_as_writer(PeerId peer, Connection& connection, bool uses_nccl, Deadline deadline) {
    CudaDeviceGuard guard(device_);
    HelloWire hello;
    hello.use_nccl = uses_nccl ? 1 : 0;
    ncclUniqueId id{};
    if (uses_nccl) {
      RECGPT_RETURN_IF_ERROR(nccl_status(ncclGetUniqueId(&id), "ncclGetUniqueId"));
      std::memcpy(hello.unique_id, &id, kUniqueIdBytes);
    }
    Bytes bytes = message(MessageType::kHello, uuid_);
    append_wire(bytes, hello);
    RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<TransferHandle> sent, control_->notify(peer, bytes));
    RECGPT_RETURN_IF_ERROR(sent->wait(deadline));
    RECGPT_ASSIGN_OR_RETURN(Channel channel, open_channel(uses_nccl ? &id : nullptr, /*rank=*/1, scratch_, deadline));
    std::lock_guard lock(connection.mutex);
    return connection.install_locked(connection.outgoing, channel.comm, channel.stream, uses_nccl);
  }

  Result<std::byte*> open_allocation_locked(Connection& connection, const RegionKeyWire& key) {
    std::array<unsigned char, kIpcHandleBytes> handle_bytes;
    std::memcpy(handle_bytes.data(), key.ipc_handle, kIpcHandleBytes);
    if (handle_bytes == std::array<unsigned char, kIpcHandleBytes>{}) {
      return unimplemented("the peer shares this GPU but its region cannot be shared through CUDA IPC");
    }
    auto opened = connection.opened_allocations.find(handle_bytes);
    if (opened != connection.opened_allocations.end()) return static_cast<std::byte*>(opened->second);
    cudaIpcMemHandle_t handle;
    std::memcpy(&handle, key.ipc_handle, kIpcHandleBytes);
    void* base = nullptr;
    CudaDeviceGuard guard(device_);
    RECGPT_RETURN_IF_ERROR(cuda_status(cudaIpcOpenMemHandle(&base, handle, cudaIpcMemLazyEnablePeerAccess),
                                       "cudaIpcOpenMemHandle of the peer's region"));
    connection.opened_allocations[handle_bytes] = base;
    return static_cast<std::byte*>(base);
  }

  // Every op checked against its regions before anything moves (kInvalidArgument naming the op).
  Result<std::vector<ResolvedOp>> resolve(PeerId peer, std::span<const WriteOp> ops) {
    std::lock_guard lock(mutex_);
    std::vector<ResolvedOp> resolved;
    resolved.reserve(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      const WriteOp& op = ops[i];
      const std::string label = "op " + std::to_string(i);
      auto local = regions_.find(op.local_region);
      if (local == regions_.end()) return invalid_argument(label + ": local region is not registered");
      auto remote = imports_.find(op.remote_region);
      if (remote == imports_.end() || remote->second.peer != peer) {
        return invalid_argument(label + ": remote region was not imported from " + peer_label(peer));
      }
      if (op.length > local->second.bytes || op.local_offset > local->second.bytes - op.length) {
        return invalid_argument(label + ": local range runs past its region");
      }
      if (op.length > remote->second.bytes || op.remote_offset > remote->second.bytes - op.length) {
        return invalid_argument(label + ": remote range runs past its region");
      }
      if (op.length == 0) continue;
      std::byte* mapped = remote->second.mapped == nullptr ? nullptr : remote->second.mapped + op.remote_offset;
      resolved.push_back({local->second.base + op.local_offset,
                          mapped,
                          {remote->second.region_at_peer, 0, op.remote_offset, op.length}});
    }
    return resolved;
  }

  // The descriptors first (so the receiver posts matching receives), then the sends, in one group.
  Status send_locked(PeerId peer, Connection& connection, std::span<const ResolvedOp> ops) {
    Bytes bytes = message(MessageType::kWrites, uuid_);
    append_wire(bytes, WriteCountWire{ops.size()});
    for (const ResolvedOp& op : ops) append_wire(bytes, op.descriptor);
    // Its completion is not awaited: a lost descriptor means a dead control connection, which fails this one.
    RECGPT_RETURN_IF_ERROR(control_->notify(peer, bytes).status());
    Channel& channel = connection.outgoing;
    RECGPT_RETURN_IF_ERROR(nccl_status(ncclGroupStart(), "ncclGroupStart"));
    for (const ResolvedOp& op : ops) {
      ncclResult_t sent =
          ncclSend(op.source, op.descriptor.length, ncclUint8, /*peer=*/0, channel.comm, channel.stream);
      if (sent != ncclSuccess && sent != ncclInProgress) {
        ncclGroupEnd();
        return nccl_status(sent, "ncclSend", channel.comm);
      }
    }
    RECGPT_RETURN_IF_ERROR(nccl_status(ncclGroupEnd(), "ncclGroupEnd", channel.comm));
    return wait_until_ready(channel.comm, Clock::now() + kLaunchTimeout, "launching the sends");
  }

  static Status copy_locked(Channel& channel, std::span<const ResolvedOp> ops) {
    for (const ResolvedOp& op : ops) {
      RECGPT_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(op.mapped_destination, op.source, op.descriptor.length,
                                                         cudaMemcpyDeviceToDevice, channel.stream),
                                         "cudaMemcpyAsync into the peer's region"));
    }
    return Status::ok();
  }

  // ---- the control loop: messages from peers, and the watch over every connection ----

  void control_loop() {
    cudaSetDevice(device_);  // the loop's own thread
    while (!stopping_) {
      auto received = control_->wait_notification(Clock::now() + kControlPoll);
      if (received.is_ok() && received->has_value()) on_message(std::move(**received));
      watch_connections();
    }
  }

  void on_message(Notification received) {
    WireReader reader(received.message, "a control message from " + peer_label(received.peer));
    Result<MessageHeader> header = reader.read<MessageHeader>();
    Status handled = header.status();
    if (handled.is_ok() && header->magic != kMessageMagic) handled = invalid_argument(reader.what() + ": bad magic");
    if (handled.is_ok()) {
      switch (header->type) {
        case MessageType::kHello: handled = on_hello(received.peer, header->sender_uuid, reader); break;
        case MessageType::kWrites: handled = on_writes(received.peer, reader); break;
        case MessageType::kNotify: handled = on_notify(received.peer, reader); break;
        default: handled = invalid_argument(reader.what() + ": unknown type " + std::to_string(uint32_t(header->type)));
      }
    }
    if (handled.is_ok()) return;
    // A peer that breaks the protocol loses its connection; the message says why to whoever looks next.
    auto connection = find_connection(received.peer);
    if (!connection.is_ok()) return;
    std::lock_guard lock((*connection)->mutex);
    (*connection)->fail_locked(handled);
  }

  // A writer connected (or connected again after a failed set-up: its new channel replaces the old one).
  // Blocks the control loop while the communicator forms, up to kJoinTimeout.
  Status on_hello(PeerId peer, uint64_t sender_uuid, WireReader& reader) {
    RECGPT_ASSIGN_OR_RETURN(HelloWire hello, reader.read<HelloWire>());
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, connection_for(peer, sender_uuid));
    {
      std::lock_guard lock(connection->mutex);
      RECGPT_RETURN_IF_ERROR(connection->check_locked());
    }
    ncclUniqueId id;
    std::memcpy(&id, hello.unique_id, kUniqueIdBytes);
    RECGPT_ASSIGN_OR_RETURN(Channel channel, open_channel(hello.use_nccl != 0 ? &id : nullptr, /*rank=*/0, scratch_,
                                                          Clock::now() + kJoinTimeout));
    std::lock_guard lock(connection->mutex);
    return connection->install_locked(connection->incoming, channel.comm, channel.stream, hello.use_nccl != 0);
  }

  Status on_writes(PeerId peer, WireReader& reader) {
    RECGPT_ASSIGN_OR_RETURN(WriteCountWire count, reader.read<WriteCountWire>());
    if (count.count != reader.rest().size() / sizeof(WriteDescriptorWire) ||
        reader.rest().size() % sizeof(WriteDescriptorWire) != 0) {
      return invalid_argument(reader.what() + ": the write count does not match the descriptors");
    }
    std::vector<std::pair<std::byte*, uint64_t>> receives;
    receives.reserve(count.count);
    {
      std::lock_guard lock(mutex_);
      for (uint64_t i = 0; i < count.count; ++i) {
        RECGPT_ASSIGN_OR_RETURN(WriteDescriptorWire write, reader.read<WriteDescriptorWire>());
        auto region = regions_.find(write.region);
        if (region == regions_.end() || write.length > region->second.bytes ||
            write.offset > region->second.bytes - write.length) {
          return invalid_argument(reader.what() + ": write " + std::to_string(i) +
                                  " is outside the registered regions");
        }
        receives.emplace_back(region->second.base + write.offset, write.length);
      }
    }
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, find_connection(peer));
    std::lock_guard lock(connection->mutex);
    RECGPT_RETURN_IF_ERROR(connection->check_locked());
    Channel& channel = connection->incoming;
    if (!channel.ready || !channel.uses_nccl) return invalid_argument(reader.what() + ": writes before an NCCL hello");
    RECGPT_RETURN_IF_ERROR(nccl_status(ncclGroupStart(), "ncclGroupStart"));
    for (auto [destination, length] : receives) {
      ncclResult_t posted = ncclRecv(destination, length, ncclUint8, /*peer=*/1, channel.comm, channel.stream);
      if (posted != ncclSuccess && posted != ncclInProgress) {
        ncclGroupEnd();
        return nccl_status(posted, "ncclRecv", channel.comm);
      }
    }
    RECGPT_RETURN_IF_ERROR(nccl_status(ncclGroupEnd(), "ncclGroupEnd", channel.comm));
    return wait_until_ready(channel.comm, Clock::now() + kLaunchTimeout, "posting the receives");
  }

  Status on_notify(PeerId peer, WireReader& reader) {
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<Connection> connection, find_connection(peer));
    QueuedNotification queued{Bytes(reader.rest().begin(), reader.rest().end()), nullptr};
    {
      std::lock_guard lock(connection->mutex);
      RECGPT_RETURN_IF_ERROR(connection->check_locked());
      Channel& channel = connection->incoming;
      if (!channel.ready) return invalid_argument(reader.what() + ": a notification before the hello");
      if (channel.uses_nccl) {
        RECGPT_RETURN_IF_ERROR(
            cuda_status(cudaEventCreateWithFlags(&queued.landed, cudaEventDisableTiming), "cudaEventCreate"));
        Status recorded = cuda_status(cudaEventRecord(queued.landed, channel.stream), "cudaEventRecord");
        if (!recorded.is_ok()) {
          cudaEventDestroy(queued.landed);
          return recorded;
        }
      }
      connection->notifications.push_back(std::move(queued));
    }
    std::lock_guard lock(mutex_);  // so that a waiter between its scan and its sleep cannot miss it
    notification_queued_.notify_all();
    return Status::ok();
  }

  // Fails connections whose peer the control engine reports gone, and drops the control connection of
  // connections that failed here (so the peer learns of it).
  void watch_connections() {
    std::vector<std::pair<PeerId, std::shared_ptr<Connection>>> connections;
    {
      std::lock_guard lock(mutex_);
      connections.assign(connections_.begin(), connections_.end());
    }
    for (auto& [peer, connection] : connections) {
      Status control = control_->peer_status(peer);
      bool drop_control = false;
      {
        std::lock_guard lock(connection->mutex);
        if (!control.is_ok()) connection->fail_locked(control.with_context("the control connection"));
        drop_control = !connection->check_locked().is_ok() && !connection->control_closed;
        if (drop_control) connection->control_closed = true;
      }
      if (drop_control) control_->disconnect(peer);
      bool finished = false;
      {
        std::lock_guard lock(connection->mutex);
        finished = connection->control_closed && connection->notifications.empty();
      }
      if (finished) forget(peer, connection);
    }
  }

  // Drops a failed connection whose notifications were all delivered (peer_status then says kUnavailable).
  void forget(PeerId peer, const std::shared_ptr<Connection>& connection) {
    std::lock_guard lock(mutex_);
    auto it = connections_.find(peer);
    if (it == connections_.end() || it->second != connection) return;
    connections_.erase(it);
    std::erase_if(imports_, [peer](const auto& entry) { return entry.second.peer == peer; });
  }

  const uint64_t uuid_ = random_uuid();
  const int device_;
  const DeviceLocation location_;
  std::unique_ptr<TransferEngine> control_;
  Bytes control_endpoint_;
  void* scratch_ = nullptr;  // device bytes for the first byte of each new channel
  std::atomic<bool> stopping_ = false;
  std::thread control_thread_;

  std::mutex mutex_;  // the tables below; taken before a connection's mutex
  std::condition_variable notification_queued_;
  LocalRegionId next_region_id_ = 1;
  RemoteRegionId next_remote_region_id_ = 1;
  std::unordered_map<LocalRegionId, DeviceRegion> regions_;
  std::unordered_map<RemoteRegionId, ImportedRegion> imports_;
  std::unordered_map<PeerId, std::shared_ptr<Connection>> connections_;
};

Result<int> parse_device(const std::string& value) {
  try {
    size_t used = 0;
    int device = std::stoi(value, &used);
    if (used == value.size() && device >= 0) return device;
  } catch (const std::exception&) {
  }
  return invalid_argument("nccl setting device=" + value + " is not a CUDA device index");
}

}  // namespace
}  // namespace nccl

Result<std::unique_ptr<TransferEngine>> create_nccl_transfer_engine(const TransferEngineOptions& options) {
  int device = 0;
  TransferEngineOptions control_options;
  control_options.name = options.name + "/control";
  control_options.settings = {{"tls", "tcp"}, {"write_op", "am"}};
  for (const auto& [key, value] : options.settings) {
    if (key == "device") {
      RECGPT_ASSIGN_OR_RETURN(device, nccl::parse_device(value));
    } else if (key == "control_tls") {
      control_options.settings[0].second = value;
    } else if (key == "control_devices") {
      control_options.settings.emplace_back("devices", value);
    } else {
      return invalid_argument("unknown nccl setting '" + key + "' (known: device, control_tls, control_devices)");
    }
  }
  int devices = 0;
  cudaError_t counted = cudaGetDeviceCount(&devices);
  if (counted != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return unavailable(
        "the nccl backend needs a CUDA device: " +
        (counted != cudaSuccess ? cuda_status(counted, "cudaGetDeviceCount").message() : std::string("none found")));
  }
  if (device >= devices) {
    return invalid_argument("nccl setting device=" + std::to_string(device) + ", but there are " +
                            std::to_string(devices) + " CUDA devices");
  }
  RECGPT_ASSIGN_OR_RETURN(nccl::DeviceLocation location, nccl::locate_device(device));
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<TransferEngine> control, create_ucx_transfer_engine(control_options));
  auto engine = std::make_unique<nccl::NcclTransferEngine>(device, location, std::move(control));
  RECGPT_RETURN_IF_ERROR(engine->start());
  return std::unique_ptr<TransferEngine>(std::move(engine));
}

}  // namespace recgpt::kv
