// The face of the KV transfer engine: one-sided block writes between processes (or GPUs) with completion
// handles and ordered notifications. Backends (`local`, `ucx`, `nccl`) are created by name through
// create_transfer_engine(); callers never see a backend type. Modelled on NIXL's backend engine and
// TensorRT-LLM's transfer agent: register memory, exchange opaque bytes through the caller's control plane,
// submit batches of writes, notify.
//
// Typical flow (receiver R owns the KV blocks, writer W pushes into them):
//   R: region = register_memory(kv.storage_data()); key = export_region(region); endpoint = local_endpoint()
//      ...sends endpoint + key + its KvLayoutDescription to W over the control plane...
//   W: peer = connect(endpoint, deadline); remote = import_region(peer, key)
//      handle = submit_writes(peer, ops); ...; notify(peer, request id)   (delivered after those writes land)
//   R: wait_notification(deadline) -> {peer, request id}; the blocks are now filled.
//
// Threading: an engine's methods may be called from several threads; handles may be polled, waited on and
// cancelled from any thread. Every wait takes a deadline: a dead or silent peer becomes kDeadlineExceeded or
// kUnavailable on the handle, never a hang.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace prometheus {
class Registry;
}

namespace recgpt::kv {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
using Bytes = std::vector<std::byte>;

enum class MemoryKind { kHost, kCuda };

struct MemoryRegion {
  void* base = nullptr;
  size_t bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
  int cuda_device = -1;  // for kCuda
};

// Handles are small integers, valid only within the engine that issued them.
using LocalRegionId = uint32_t;   // from register_memory
using PeerId = uint32_t;          // from connect, or from an incoming connection (notifications)
using RemoteRegionId = uint32_t;  // from import_region, valid with its peer

struct AllocatedRegion {
  LocalRegionId id = 0;
  std::byte* base = nullptr;  // valid until deregister_memory(id)
};

// One contiguous write: `length` bytes from a local registered region to a region of the peer.
struct WriteOp {
  LocalRegionId local_region = 0;
  uint64_t local_offset = 0;
  RemoteRegionId remote_region = 0;
  uint64_t remote_offset = 0;
  uint64_t length = 0;
};

enum class TransferState { kPending, kDone, kFailed, kCancelled };

// The completion of one submitted batch (or notification). Thread-safe.
class TransferHandle {
 public:
  virtual ~TransferHandle() = default;
  // Non-blocking: the state now. kFailed carries its reason in status().
  virtual TransferState poll() = 0;
  // Blocks until the batch is done, failed or cancelled, or the deadline passes (kDeadlineExceeded; the batch
  // may still be in flight: cancel() it before reusing its memory).
  virtual Status wait(Deadline deadline) = 0;
  // Stops writes not yet started; returns once none of this batch's writes can touch memory any more. Bounded:
  // a backend that cannot stop writes in flight to a silent peer abandons that peer (its connection closes,
  // later submissions to it fail with kUnavailable) rather than wait for it.
  virtual void cancel() = 0;
  // ok while pending or done; the error once failed or cancelled.
  virtual Status status() = 0;
};

struct Notification {
  PeerId peer = 0;
  Bytes message;
};

class TransferEngine {
 public:
  virtual ~TransferEngine() = default;

  virtual std::string_view backend_name() const = 0;

  // Registers memory for transfers in either direction; the memory must outlive the registration.
  // kInvalidArgument for an empty region or a memory kind this backend cannot reach.
  virtual Result<LocalRegionId> register_memory(const MemoryRegion& region) = 0;
  // Allocates `bytes` of host memory through the backend, zeroed, and registers it: memory the backend can share
  // with peers of the same host (ucx: a shared-memory segment that peers map, so a write to it is a plain copy in
  // the writer, not a system call per op). deregister_memory frees it. kResourceExhausted when it cannot.
  virtual Result<AllocatedRegion> allocate_memory(size_t bytes) = 0;
  // Deregister only after the handles of writes using the region completed (anything else is a caller bug).
  // Memory from allocate_memory is freed.
  virtual Status deregister_memory(LocalRegionId region) = 0;
  // Opaque bytes that let a peer write into the region (UCX: a packed rkey plus base and size).
  virtual Result<Bytes> export_region(LocalRegionId region) = 0;

  // Opaque bytes that let a peer connect to this engine.
  virtual Result<Bytes> local_endpoint() = 0;
  // Connects to the engine described by `endpoint` (from its local_endpoint()). kInvalidArgument for bytes
  // that are not an endpoint of this backend; kUnavailable or kDeadlineExceeded for an unreachable peer.
  virtual Result<PeerId> connect(std::span<const std::byte> endpoint, Deadline deadline) = 0;
  // The peer for the engine at `endpoint`, to follow with peer_status(), without setting up writes to it: the
  // same PeerId that connect() and that engine's notifications give. Does not block. kUnavailable when that
  // engine is gone (it refused a connection, or its transport reported it failed, as peer_status() would). ucx
  // and nccl only look up the engines they are in contact with (it connected here, or this engine to it) and
  // answer kNotFound for others; local connects. Any other code says nothing of the peer.
  virtual Result<PeerId> watch(std::span<const std::byte> endpoint) = 0;
  // Makes a region exported by `peer` writable from here. kInvalidArgument for malformed key bytes.
  virtual Result<RemoteRegionId> import_region(PeerId peer, std::span<const std::byte> key) = 0;
  // Drops the connection; later submissions to it fail with kUnavailable.
  virtual void disconnect(PeerId peer) = 0;

  // Starts the writes (in any order among themselves). Every op is checked against its regions' bounds
  // before anything is written (kInvalidArgument naming the op).
  virtual Result<std::unique_ptr<TransferHandle>> submit_writes(PeerId peer, std::span<const WriteOp> ops) = 0;
  // Sends `message` to the peer; it is delivered only after every write submitted to that peer before this
  // call has landed, and not at all if one of them failed.
  virtual Result<std::unique_ptr<TransferHandle>> notify(PeerId peer, std::span<const std::byte> message) = 0;
  // The next notification received from any peer, or nullopt at the deadline. A peer's failure is not a
  // notification: a receiver waiting for one checks peer_status() when its deadline passes.
  virtual Result<std::optional<Notification>> wait_notification(Deadline deadline) = 0;
  // ok while the peer is connected; kUnavailable once it died or disconnected.
  virtual Status peer_status(PeerId peer) = 0;
};

struct TransferEngineOptions {
  std::string name;  // shows in endpoints, metrics (label node) and errors
  // Backend settings as key=value (ucx: "tls=tcp", "devices=lo"); unknown keys are kInvalidArgument.
  std::vector<std::pair<std::string, std::string>> settings;
  // When set, operations, bytes and durations are counted there (recgpt_kv_transfer_*, transfer_metrics.h).
  std::shared_ptr<prometheus::Registry> metrics;
};

// The backends compiled into this binary, e.g. {"local", "ucx"}.
std::vector<std::string> transfer_backends();
// kNotFound naming the available backends when `backend` is not one of them.
Result<std::unique_ptr<TransferEngine>> create_transfer_engine(std::string_view backend,
                                                               const TransferEngineOptions& options);

}  // namespace recgpt::kv
