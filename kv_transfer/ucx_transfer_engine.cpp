// The `ucx` transfer backend: one UCP context and one worker per engine, one-sided writes with ucp_put_nbx into
// regions mapped with ucp_mem_map and exported as packed rkeys, notifications as active messages.
//
// Threading: UCX workers are not thread-safe in the mode used here (UCS_THREAD_MODE_SERIALIZED), so every UCX
// call and all engine state (regions, peers, pending notifications) sit under the one mutex of UcxWorker. A
// progress thread per engine drives ucp_worker_progress under that mutex and sleeps on the worker's event fd
// (bounded by kIdlePoll) when there is nothing to do. UCX callbacks therefore run with the mutex held.
// Operations (a write batch, a flush, a notification) have their own small mutex, always taken after the
// worker's, never before.
//
// Writes: ucp_put_nbx, or an active message per op (region id + offset header) that the receiver's handler
// copies (eager) or receives straight into the region (rendezvous). The setting write_op picks: auto (default)
// puts to peers over shared memory and active messages to peers over the network (see uses_puts), put, or am.
// Over RDMA networks (hardware puts) set write_op=put.
// A batch's handle completes with a ucp_ep_flush_nbx issued after its operations.
//
// Ordering of notify(): the notification is sent only once a ucp_ep_flush_nbx issued by notify() completed; a
// failed flush fails the notification unsent. A completed flush does not mean the receiver has handled the writes
// (over tcp, active messages count as flushed once in the writer's socket), but the notification travels behind
// them on the same lane and the receiver's progress thread handles it after them: it is the receiver's proof that
// the writes landed, and a batch's done handle is only the writer's proof that they left.
//
// Device memory: registered with UCX where it has a CUDA transport. Where it has none (Debian's build), a device
// region is staged through host memory with the CUDA runtime (device_copy.h): writes from it are copied to a host
// buffer first, writes into it are active messages whose data the receiver copies to the device before it handles
// anything later (so a notification still comes after the bytes landed). Its key carries no rkey.
//
// Peer failure: endpoints use UCP_ERR_HANDLING_MODE_PEER; the error handler marks the peer dead, so its
// pending requests complete with an error (kUnavailable on the handle) and later submissions are refused, and
// the progress thread then closes its endpoint. UCX 1.13's shared-memory transports (posix, cma) refuse that
// mode; an engine configured with only those has no failure detection (detects_peer_failure), and a dead peer
// shows only as kDeadlineExceeded on waits.
#include <poll.h>
#include <ucp/api/ucp.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kv_transfer/backends.h"
#include "kv_transfer/device_copy.h"
#include "kv_transfer/ucx_engine_records.h"
#include "kv_transfer/ucx_operation.h"
#include "kv_transfer/ucx_staging.h"
#include "kv_transfer/ucx_wire.h"
#include "kv_transfer/ucx_worker.h"

namespace recgpt::kv {
namespace {

using namespace ucx_records;  // NOLINT(google-build-using-namespace): this file's own records

constexpr unsigned kNotifyAmId = 1;
constexpr unsigned kWriteAmId = 2;
constexpr std::chrono::milliseconds kIdlePoll(5);

std::string op_label(size_t index) { return "op " + std::to_string(index); }

uint64_t random_uuid() {
  std::random_device random;
  return (static_cast<uint64_t>(random()) << 32) ^ random();
}

class UcxTransferEngine final : public TransferEngine {
 public:
  UcxTransferEngine(std::string name, std::shared_ptr<UcxWorker> worker, uint64_t memory_types,
                    WriteOperation write_operation, bool peer_failure_detection,
                    std::shared_ptr<DeviceCopier> device_copier)
      : name_(std::move(name)),
        worker_(std::move(worker)),
        memory_types_(memory_types),
        write_operation_(write_operation),
        peer_failure_detection_(peer_failure_detection),
        staged_(std::move(device_copier), [this] {
          std::lock_guard lock(inbox_mutex_);  // so a waiter between its check and its sleep cannot miss it
          inbox_changed_.notify_all();
        }) {}

  ~UcxTransferEngine() override {
    stopping_ = true;
    if (progress_thread_.joinable()) {
      {
        std::lock_guard lock(worker_->mutex);
        ucp_worker_signal(worker_->worker);
      }
      progress_thread_.join();
    }
    std::lock_guard lock(worker_->mutex);
    for (PendingNotification& pending : pending_notifications_) {
      pending.send->fail(unavailable("the engine was destroyed"), /*close=*/true);
    }
    pending_notifications_.clear();
    // Lets wire-up messages still queued (e.g. a reply to a peer's connection) leave first: UCX 1.13 aborts in
    // ucp_worker_destroy when it has to purge a pending wire-up reply.
    Closing closing;
    ucp_request_param_t flush_param{};
    ucs_status_ptr_t flushing = ucp_worker_flush_nbx(worker_->worker, &flush_param);
    if (flushing != nullptr && UCS_PTR_IS_PTR(flushing)) closing.requests.push_back(flushing);
    drain_locked(closing);
    for (auto& [id, peer] : peers_) close_peer_locked(id, peer, &closing);
    drain_locked(closing);
    for (auto& [id, region] : regions_) {
      if (region.memory != nullptr) ucp_mem_unmap(worker_->context, region.memory);
    }
    // Handles may keep the worker alive after this engine: nothing of it may be called back any more.
    (void)set_am_handlers(false);
  }

  Status start() {
    RECGPT_RETURN_IF_ERROR(set_am_handlers(true));
    ucp_address_t* address = nullptr;
    size_t address_bytes = 0;
    ucs_status_t status = ucp_worker_get_address(worker_->worker, &address, &address_bytes);
    if (status != UCS_OK) return ucx_failure("ucp_worker_get_address", status);
    endpoint_ =
        to_bytes(EndpointWire{kEndpointMagic, static_cast<uint32_t>(address_bytes), uuid_}, address, address_bytes);
    ucp_worker_release_address(worker_->worker, address);
    status = ucp_worker_get_efd(worker_->worker, &event_fd_);
    if (status != UCS_OK) return ucx_failure("ucp_worker_get_efd", status);
    progress_thread_ = std::thread([this] { progress_loop(); });
    return Status::ok();
  }

  std::string_view backend_name() const override { return "ucx"; }

  Result<LocalRegionId> register_memory(const MemoryRegion& region) override {
    if (region.base == nullptr) return invalid_argument("cannot register a region with a null base");
    if (region.bytes == 0) return invalid_argument("cannot register an empty region");
    const bool cuda = region.kind == MemoryKind::kCuda;
    if (cuda && (memory_types_ & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) == 0) return register_staged(region);
    ucp_mem_map_params_t params{};
    params.field_mask =
        UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    params.address = region.base;
    params.length = region.bytes;
    params.memory_type = cuda ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
    std::lock_guard lock(worker_->mutex);
    ucp_mem_h memory = nullptr;
    ucs_status_t status = ucp_mem_map(worker_->context, &params, &memory);
    if (status != UCS_OK)
      return invalid_argument(std::string("ucp_mem_map refused the region: ") + ucs_status_string(status));
    const LocalRegionId id = next_region_id_++;  // never reused: a stale key cannot name a newer region
    regions_[id] = {static_cast<std::byte*>(region.base), region.bytes, memory};
    return id;
  }

  Result<AllocatedRegion> allocate_memory(size_t bytes) override {
    if (bytes == 0) return invalid_argument("cannot allocate an empty region");
    ucp_mem_map_params_t params{};
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                        UCP_MEM_MAP_PARAM_FIELD_FLAGS | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    params.address = nullptr;
    params.length = bytes;
    params.flags = UCP_MEM_MAP_ALLOCATE;
    params.memory_type = UCS_MEMORY_TYPE_HOST;
    std::lock_guard lock(worker_->mutex);
    ucp_mem_h memory = nullptr;
    ucs_status_t status = ucp_mem_map(worker_->context, &params, &memory);
    if (status != UCS_OK)
      return resource_exhausted("ucp_mem_map could not allocate " + std::to_string(bytes) +
                                " bytes: " + ucs_status_string(status));
    ucp_mem_attr_t attributes{};
    attributes.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
    status = ucp_mem_query(memory, &attributes);
    if (status != UCS_OK || attributes.length < bytes) {
      ucp_mem_unmap(worker_->context, memory);
      return resource_exhausted("ucp_mem_query of a new allocation failed");
    }
    auto* base = static_cast<std::byte*>(attributes.address);
    std::memset(base, 0, bytes);
    const LocalRegionId id = next_region_id_++;
    regions_[id] = {base, bytes, memory};
    return AllocatedRegion{id, base};
  }

  Status deregister_memory(LocalRegionId region) override {
    std::lock_guard lock(worker_->mutex);
    auto it = regions_.find(region);
    if (it == regions_.end()) return not_found("region " + std::to_string(region) + " is not registered");
    if (it->second.memory != nullptr) ucp_mem_unmap(worker_->context, it->second.memory);
    regions_.erase(it);
    return Status::ok();
  }

  Result<Bytes> export_region(LocalRegionId region) override {
    std::lock_guard lock(worker_->mutex);
    auto it = regions_.find(region);
    if (it == regions_.end()) return not_found("region " + std::to_string(region) + " is not registered");
    RegionKeyWire key;
    key.engine_uuid = uuid_;
    key.base_address = reinterpret_cast<uint64_t>(it->second.base);
    key.bytes = it->second.bytes;
    key.region = region;
    if (it->second.staged_device >= 0) {
      key.flags = kRegionStaged;
      return to_bytes(key, nullptr, 0);
    }
    void* packed = nullptr;
    size_t packed_bytes = 0;
    ucs_status_t status = ucp_rkey_pack(worker_->context, it->second.memory, &packed, &packed_bytes);
    if (status != UCS_OK) return ucx_failure("ucp_rkey_pack", status);
    key.payload_bytes = static_cast<uint32_t>(packed_bytes);
    Bytes bytes = to_bytes(key, packed, packed_bytes);
    ucp_rkey_buffer_release(packed);
    return bytes;
  }

  Result<Bytes> local_endpoint() override { return endpoint_; }

  Result<PeerId> connect(std::span<const std::byte> endpoint, Deadline deadline) override {
    RECGPT_ASSIGN_OR_RETURN(EndpointWire wire, parse_wire<EndpointWire>(endpoint, kEndpointMagic, "a ucx endpoint"));
    if (wire.payload_bytes == 0) return invalid_argument("a ucx endpoint must carry a worker address");
    PeerId id = 0;
    auto flush = std::make_shared<Operation>(*worker_);
    {
      std::lock_guard lock(worker_->mutex);
      RECGPT_ASSIGN_OR_RETURN(id, peer_for_locked(wire.engine_uuid, endpoint));
      // A flush completes once the endpoint's wire-up with the peer finished: that proves it reachable.
      ucp_request_param_t param = request_param(flush.get());
      flush->track(ucp_ep_flush_nbx(peers_[id].endpoint, &param), "connecting (ucp_ep_flush_nbx)");
      flush->close();
      ucp_worker_signal(worker_->worker);
    }
    Status reached = flush->wait(deadline);
    if (reached.is_ok()) return id;
    {
      std::lock_guard lock(worker_->mutex);
      flush->cancel_requests(worker_->worker);
    }
    drop_peer(id, EndpointClose::kForce);  // unreachable or late: nothing to wait for
    if (reached.code() == StatusCode::kDeadlineExceeded) {
      return deadline_exceeded("connecting to the ucx endpoint did not finish before the deadline");
    }
    return unavailable("cannot reach the ucx endpoint: " + reached.message());
  }

  // A lookup: no endpoint is created. UCX 1.13 aborts (an assertion on a pending wire-up reply, removed upstream
  // in openucx/ucx#8175) when an endpoint this worker creates meets the peer's own connection set-up and the peer
  // dies in between, which is just when a watch would be asked for (seen once in CI).
  Result<PeerId> watch(std::span<const std::byte> endpoint) override {
    RECGPT_ASSIGN_OR_RETURN(EndpointWire wire, parse_wire<EndpointWire>(endpoint, kEndpointMagic, "a ucx endpoint"));
    std::lock_guard lock(worker_->mutex);
    auto known = current_by_uuid_.find(wire.engine_uuid);
    if (known == current_by_uuid_.end()) return not_found("this ucx engine has not been in contact with that one");
    const Peer& peer = peers_[known->second];
    if (!peer.connected) return peer.failure;
    return known->second;
  }

  Result<RemoteRegionId> import_region(PeerId peer, std::span<const std::byte> key) override {
    std::lock_guard lock(worker_->mutex);
    RECGPT_ASSIGN_OR_RETURN(Peer * found, connected_peer_locked(peer));
    RECGPT_ASSIGN_OR_RETURN(RegionKeyWire wire, parse_wire<RegionKeyWire>(key, kRegionKeyMagic, "a ucx region key"));
    if (wire.engine_uuid != found->uuid) {
      return invalid_argument("the region key was exported by another engine than peer " + std::to_string(peer));
    }
    if ((wire.flags & ~kRegionStaged) != 0 || ((wire.flags & kRegionStaged) != 0) != (wire.payload_bytes == 0)) {
      return invalid_argument("the region key's flags do not fit its payload (flags " + std::to_string(wire.flags) +
                              ", " + std::to_string(wire.payload_bytes) + " payload bytes)");
    }
    ImportedRegion imported{wire.base_address, wire.bytes, nullptr, wire.region};
    if (wire.payload_bytes > 0) {
      ucs_status_t status = ucp_ep_rkey_unpack(found->endpoint, key.data() + sizeof(RegionKeyWire), &imported.rkey);
      if (status != UCS_OK) {
        return invalid_argument(std::string("ucp_ep_rkey_unpack refused the region key: ") + ucs_status_string(status));
      }
    }
    const RemoteRegionId id = next_remote_region_id_++;
    found->imported[id] = imported;
    return id;
  }

  void disconnect(PeerId peer) override { drop_peer(peer, EndpointClose::kFlush); }

  Result<std::unique_ptr<TransferHandle>> submit_writes(PeerId peer, std::span<const WriteOp> ops) override {
    std::lock_guard lock(worker_->mutex);
    RECGPT_ASSIGN_OR_RETURN(Peer * found, connected_peer_locked(peer));
    RECGPT_ASSIGN_OR_RETURN(ResolvedOps resolved, resolve_ops_locked(*found, peer, ops));
    auto batch = std::make_shared<Operation>(*worker_);
    ucp_request_param_t param = request_param(batch.get());
    auto headers = std::make_shared<std::vector<WriteWire>>(ops.size());  // read by UCX until completion
    batch->attach(headers);
    RECGPT_ASSIGN_OR_RETURN(std::vector<const std::byte*> sources, stage_sources(ops, resolved, *batch));
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].length == 0) continue;
      const auto [local, remote] = resolved[i];
      const std::byte* source = sources[i];
      if (uses_puts() && remote->rkey != nullptr) {
        batch->track(ucp_put_nbx(found->endpoint, source, ops[i].length, remote->base_address + ops[i].remote_offset,
                                 remote->rkey, &param),
                     op_label(i) + " (ucp_put_nbx)");
        continue;
      }
      (*headers)[i] = {kWriteMagic, remote->region_at_peer, ops[i].remote_offset, ops[i].length};
      batch->track(ucp_am_send_nbx(found->endpoint, kWriteAmId, &(*headers)[i], sizeof(WriteWire), source,
                                   ops[i].length, &param),
                   op_label(i) + " (ucp_am_send_nbx)");
    }
    // Sends complete locally once their source may be reused; the flush once the transport has them out (puts
    // over shared memory: written; active messages over tcp: in the socket, not yet handled by the receiver).
    batch->track(ucp_ep_flush_nbx(found->endpoint, &param), "flushing the writes (ucp_ep_flush_nbx)");
    batch->close();
    ucp_worker_signal(worker_->worker);
    return std::unique_ptr<TransferHandle>(std::make_unique<UcxHandle>(worker_, batch, found->abandon));
  }

  Result<std::unique_ptr<TransferHandle>> notify(PeerId peer, std::span<const std::byte> message) override {
    std::lock_guard lock(worker_->mutex);
    RECGPT_ASSIGN_OR_RETURN(Peer * found, connected_peer_locked(peer));
    PendingNotification pending;
    pending.peer = peer;
    pending.flush = std::make_shared<Operation>(*worker_);
    pending.send = std::make_shared<Operation>(*worker_);
    pending.payload.header.endpoint_bytes = static_cast<uint32_t>(endpoint_.size());
    pending.payload.header.sender_uuid = uuid_;
    pending.payload.data = endpoint_;
    pending.payload.data.insert(pending.payload.data.end(), message.begin(), message.end());
    ucp_request_param_t param = request_param(pending.flush.get());
    pending.flush->track(ucp_ep_flush_nbx(found->endpoint, &param), "flushing before a notification");
    pending.flush->close();
    auto handle = std::make_unique<UcxHandle>(worker_, pending.send, found->abandon);
    pending_notifications_.push_back(std::move(pending));
    ucp_worker_signal(worker_->worker);
    return std::unique_ptr<TransferHandle>(std::move(handle));
  }

  Result<std::optional<Notification>> wait_notification(Deadline deadline) override {
    IncomingNotification incoming;
    {
      std::unique_lock lock(inbox_mutex_);
      if (!inbox_changed_.wait_until(lock, deadline,
                                     [this] { return !inbox_.empty() || !staged_.failure().is_ok(); })) {
        return std::optional<Notification>();
      }
      RECGPT_RETURN_IF_ERROR(staged_.failure());
      incoming = std::move(inbox_.front());
      inbox_.pop_front();
    }
    std::lock_guard lock(worker_->mutex);
    RECGPT_ASSIGN_OR_RETURN(PeerId sender, sender_locked(incoming.sender_uuid, incoming.sender_endpoint));
    return std::optional<Notification>(Notification{sender, std::move(incoming.message)});
  }

  Status peer_status(PeerId peer) override {
    std::lock_guard lock(worker_->mutex);
    return connected_peer_locked(peer).status();
  }

 private:
  // A device region this UCX cannot map: kept for staging through host memory (or refused without a copier).
  Result<LocalRegionId> register_staged(const MemoryRegion& region) {
    if (staged_.copier() == nullptr) {
      return invalid_argument(
          "this UCX build has no CUDA transport (cuda_copy/cuda_ipc) and this build no CUDA runtime to stage "
          "through host memory; cannot register device " +
          std::to_string(region.cuda_device) + " memory");
    }
    RECGPT_RETURN_IF_ERROR(staged_.copier()->check(region.base, region.bytes, region.cuda_device));
    std::lock_guard lock(worker_->mutex);
    const LocalRegionId id = next_region_id_++;
    regions_[id] = {static_cast<std::byte*>(region.base), region.bytes, nullptr, region.cuda_device};
    return id;
  }

  // Where each op's bytes are sent from: its region, or for a staged region a host copy made now (kept alive by
  // `batch` until its sends completed; no buffer when nothing is staged). Runs with the worker's mutex held.
  Result<std::vector<const std::byte*>> stage_sources(std::span<const WriteOp> ops, const ResolvedOps& resolved,
                                                      Operation& batch) {
    std::vector<const std::byte*> sources(ops.size());
    uint64_t staged_bytes = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      const Region& local = *resolved[i].first;
      if (local.staged_device >= 0) {
        staged_bytes += ops[i].length;
      } else {
        sources[i] = local.base + ops[i].local_offset;
      }
    }
    if (staged_bytes == 0) return sources;
    std::shared_ptr<std::byte[]> staging(new std::byte[staged_bytes]);  // not zeroed: every byte is copied in
    batch.attach(staging);
    uint64_t at = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      const Region& local = *resolved[i].first;
      if (local.staged_device < 0) continue;
      std::byte* host = staging.get() + at;
      RECGPT_RETURN_IF_ERROR(
          staged_.copier()->to_host(host, local.base + ops[i].local_offset, ops[i].length, local.staged_device));
      sources[i] = host;
      at += ops[i].length;
    }
    return sources;
  }

  // Installs (or, with enabled=false, removes) the handlers of incoming notifications and writes.
  Status set_am_handlers(bool enabled) {
    for (auto [id, handler] : {std::pair{kNotifyAmId, &UcxTransferEngine::on_notification},
                               std::pair{kWriteAmId, &UcxTransferEngine::on_write}}) {
      ucp_am_handler_param_t param{};
      param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
      param.id = id;
      param.cb = enabled ? handler : nullptr;
      param.arg = this;
      ucs_status_t status = ucp_worker_set_am_recv_handler(worker_->worker, &param);
      if (status != UCS_OK) return ucx_failure("ucp_worker_set_am_recv_handler", status);
    }
    return Status::ok();
  }

  // Runs on the progress thread with the worker's mutex held. The sender checked the range against the
  // region's exported size; a write into a region deregistered since (a caller bug) is dropped.
  static ucs_status_t on_write(void* arg, const void* header, size_t header_bytes, void* data, size_t data_bytes,
                               const ucp_am_recv_param_t* param) {
    auto* engine = static_cast<UcxTransferEngine*>(arg);
    const bool rendezvous = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    WriteWire wire;
    if (header_bytes == sizeof(WriteWire)) std::memcpy(&wire, header, sizeof(WriteWire));
    auto region = engine->regions_.find(wire.region);
    if (header_bytes != sizeof(WriteWire) || wire.magic != kWriteMagic || wire.bytes != data_bytes ||
        region == engine->regions_.end() || data_bytes > region->second.bytes ||
        wire.offset > region->second.bytes - data_bytes) {
      return UCS_OK;  // dropped; for a rendezvous UCX releases the data and lets the writer's send complete
    }
    std::byte* destination = region->second.base + wire.offset;
    if (region->second.staged_device >= 0) {
      const bool receiving = engine->staged_.receive(engine->worker_->worker, region->second.staged_device, destination,
                                                     data, data_bytes, rendezvous);
      return receiving ? UCS_INPROGRESS : UCS_OK;
    }
    if (!rendezvous) {
      std::memcpy(destination, data, data_bytes);
      return UCS_OK;
    }
    // Rendezvous: UCX fetches the bytes straight into the region.
    ucp_request_param_t receive{};
    receive.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK;
    receive.cb.recv_am = [](void* request, ucs_status_t, size_t, void*) { ucp_request_free(request); };
    ucs_status_ptr_t request = ucp_am_recv_data_nbx(engine->worker_->worker, data, destination, data_bytes, &receive);
    (void)request;  // completed inline (nullptr), an error, or freed by the callback
    return UCS_INPROGRESS;
  }

  // Runs on the progress thread with the worker's mutex held. Notifications are sent eager, so data is here.
  static ucs_status_t on_notification(void* arg, const void* header, size_t header_bytes, void* data, size_t data_bytes,
                                      const ucp_am_recv_param_t* param) {
    auto* engine = static_cast<UcxTransferEngine*>(arg);
    NotifyWire wire;
    if (header_bytes != sizeof(NotifyWire) || (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) return UCS_OK;
    std::memcpy(&wire, header, sizeof(NotifyWire));
    if (wire.magic != kNotifyMagic || wire.endpoint_bytes > data_bytes) return UCS_OK;
    const auto* bytes = static_cast<const std::byte*>(data);
    IncomingNotification incoming{wire.sender_uuid, Bytes(bytes, bytes + wire.endpoint_bytes),
                                  Bytes(bytes + wire.endpoint_bytes, bytes + data_bytes)};
    {
      std::lock_guard lock(engine->inbox_mutex_);
      engine->inbox_.push_back(std::move(incoming));
    }
    engine->inbox_changed_.notify_one();
    return UCS_OK;
  }

  static void on_peer_error(void* arg, ucp_ep_h endpoint, ucs_status_t status) {
    auto* engine = static_cast<UcxTransferEngine*>(arg);
    for (auto& [id, peer] : engine->peers_) {
      if (peer.endpoint != endpoint || !peer.connected) continue;
      peer.connected = false;
      peer.failure = ucx_failure("peer " + std::to_string(id) + " failed", status);
      engine->failed_peers_.push_back(id);
      engine->dead_peers_.push_back(id);
    }
  }

  void progress_loop() {
    while (!stopping_) {
      bool armed = false;
      {
        std::lock_guard lock(worker_->mutex);
        while (ucp_worker_progress(worker_->worker) != 0) {
        }
        send_flushed_notifications_locked();
        close_abandoned_peers_locked();
        close_failed_endpoints_locked();
        forget_old_peers_locked();
        armed = ucp_worker_arm(worker_->worker) == UCS_OK;
      }
      if (!armed) continue;
      pollfd event{event_fd_, POLLIN, 0};
      ::poll(&event, 1, static_cast<int>(kIdlePoll.count()));
    }
  }

  // WriteOperation::kAuto: puts over shared memory, where UCX has no failure detection and treats any transport
  // error as fatal (an active message's rendezvous reads the writer's memory, and aborts this process when the
  // writer died); active messages over the network, where UCX 1.13 emulates puts in software over tcp (slow,
  // and its put handler aborts the receiver when the writer dies mid-put). Both seen in the two-process tests.
  bool uses_puts() const {
    return write_operation_ == WriteOperation::kPut ||
           (write_operation_ == WriteOperation::kAuto && !peer_failure_detection_);
  }

  void close_abandoned_peers_locked() {
    Closing closing;
    for (auto& [id, peer] : peers_) {
      if (!peer.connected || !peer.abandon->load()) continue;
      close_peer_locked(id, peer, &closing);
      peer.failure =
          unavailable("peer " + std::to_string(id) +
                      " was abandoned: writes to it did not stop after a cancel (connect again to reuse it)");
    }
    drain_locked(closing);
  }

  // Closes the endpoints UCX reported failed, after the progress call that reported them (the error handler runs
  // inside it). A failed endpoint is unusable but stays allocated in the worker until its owner closes it.
  void close_failed_endpoints_locked() {
    if (failed_peers_.empty()) return;
    Closing closing;
    for (PeerId id : std::exchange(failed_peers_, {})) {
      auto it = peers_.find(id);
      if (it != peers_.end() && it->second.endpoint != nullptr) {
        close_endpoint_locked(it->second, &closing, EndpointClose::kForce);
      }
    }
    drain_locked(closing);
  }

  // Sends, in submission order per peer, the notifications whose flush completed.
  void send_flushed_notifications_locked() {
    std::unordered_set<PeerId> blocked;
    for (auto it = pending_notifications_.begin(); it != pending_notifications_.end();) {
      const TransferState flushed = it->flush->state();
      if (blocked.count(it->peer) != 0 || flushed == TransferState::kPending) {
        blocked.insert(it->peer);
        ++it;
        continue;
      }
      if (flushed == TransferState::kDone) {
        send_notification_locked(*it);
      } else if (it->send->state() != TransferState::kCancelled) {
        it->send->fail(unavailable("the writes before the notification failed, so it was not sent: " +
                                   it->flush->status().message()),
                       /*close=*/true);
      }
      it = pending_notifications_.erase(it);
    }
  }

  void send_notification_locked(PendingNotification& pending) {
    Result<Peer*> peer = connected_peer_locked(pending.peer);
    if (!peer.is_ok()) return pending.send->fail(peer.status(), /*close=*/true);
    if (pending.send->state() == TransferState::kCancelled) return;
    auto payload = std::make_shared<NotificationPayload>(std::move(pending.payload));
    const std::shared_ptr<Operation>& send = pending.send;
    send->attach(payload);
    ucp_request_param_t param = request_param(send.get());
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_AM_SEND_FLAG_EAGER;
    send->track(ucp_am_send_nbx((*peer)->endpoint, kNotifyAmId, &payload->header, sizeof(NotifyWire),
                                payload->data.data(), payload->data.size(), &param),
                "sending the notification (ucp_am_send_nbx)");
    send->close();
  }

  // The PeerId of a notification's sender: the one this engine has for it, even when that peer has died or
  // disconnected since (what it sent before still counts, under the id its receiver expects; reconnecting
  // would give a new id). Connects back only to a sender this engine has no peer for.
  Result<PeerId> sender_locked(uint64_t uuid, std::span<const std::byte> endpoint) {
    auto known = current_by_uuid_.find(uuid);
    if (known != current_by_uuid_.end()) return known->second;
    return peer_for_locked(uuid, endpoint);
  }

  // The peer for that engine, connecting to it when there is none: one PeerId per remote engine.
  Result<PeerId> peer_for_locked(uint64_t uuid, std::span<const std::byte> endpoint) {
    auto current = current_by_uuid_.find(uuid);
    if (current != current_by_uuid_.end() && peers_[current->second].connected) return current->second;
    const auto* address = reinterpret_cast<const ucp_address_t*>(endpoint.data() + sizeof(EndpointWire));
    ucp_ep_h created = nullptr;
    const ucs_status_t status = create_endpoint_locked(
        address, peer_failure_detection_ ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE, &created);
    if (status == UCS_ERR_UNREACHABLE) {
      return ucx_failure(peer_failure_detection_
                             ? "ucp_ep_create for the ucx endpoint, with peer failure detection (the peer refused the "
                               "connection, or none of the transports in tls can detect a dead peer)"
                             : "ucp_ep_create for the ucx endpoint",
                         status);
    }
    // Anything else failed here (memory, file descriptors), which says nothing of the peer (watch()).
    if (status != UCS_OK) {
      return internal_error(std::string("ucp_ep_create for the ucx endpoint failed here: ") +
                            ucs_status_string(status));
    }
    const PeerId id = next_peer_id_++;
    peers_[id] = Peer{uuid, created, true, Status::ok(), {}, std::make_shared<std::atomic<bool>>(false)};
    current_by_uuid_[uuid] = id;
    return id;
  }

  ucs_status_t create_endpoint_locked(const ucp_address_t* address, ucp_err_handling_mode_t mode, ucp_ep_h* created) {
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    params.address = address;
    params.err_mode = mode;
    if (mode == UCP_ERR_HANDLING_MODE_PEER) {
      params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
      params.err_handler.cb = &UcxTransferEngine::on_peer_error;
      params.err_handler.arg = this;
    }
    return ucp_ep_create(worker_->worker, &params, created);
  }

  Result<Peer*> connected_peer_locked(PeerId peer) {
    auto it = peers_.find(peer);
    if (it == peers_.end()) return not_found("unknown peer " + std::to_string(peer));
    if (!it->second.connected) return it->second.failure;
    return &it->second;
  }

  // Each op's local and remote region; kInvalidArgument naming the first op that is not inside its regions.
  Result<ResolvedOps> resolve_ops_locked(const Peer& found, PeerId peer, std::span<const WriteOp> ops) const {
    ResolvedOps resolved;
    resolved.reserve(ops.size());
    auto outside = [](uint64_t offset, uint64_t length, uint64_t bytes) {
      return length > bytes || offset > bytes - length;
    };
    for (size_t i = 0; i < ops.size(); ++i) {
      const WriteOp& op = ops[i];
      auto local = regions_.find(op.local_region);
      if (local == regions_.end()) {
        return invalid_argument(op_label(i) + ": local region " + std::to_string(op.local_region) +
                                " is not registered");
      }
      auto remote = found.imported.find(op.remote_region);
      if (remote == found.imported.end()) {
        return invalid_argument(op_label(i) + ": remote region " + std::to_string(op.remote_region) +
                                " was not imported from peer " + std::to_string(peer));
      }
      if (outside(op.local_offset, op.length, local->second.bytes)) {
        return invalid_argument(op_label(i) + ": local range at offset " + std::to_string(op.local_offset) + " of " +
                                std::to_string(op.length) + " bytes exceeds its region of " +
                                std::to_string(local->second.bytes) + " bytes");
      }
      if (outside(op.remote_offset, op.length, remote->second.bytes)) {
        return invalid_argument(op_label(i) + ": remote range at offset " + std::to_string(op.remote_offset) + " of " +
                                std::to_string(op.length) + " bytes exceeds its region of " +
                                std::to_string(remote->second.bytes) + " bytes");
      }
      resolved.emplace_back(&local->second, &remote->second);
    }
    return resolved;
  }

  // kForce: the endpoint goes at once, answered by the peer or not (a dead, unreachable or abandoned peer; the
  // engine's end). kFlush, for a live peer: after what was sent to it left, and UCX keeps the endpoint until the
  // peer's side of the wire-up is settled. A forced close right after connect() (the peer's wire-up reply still
  // on its way) made this worker open an internal endpoint to answer that reply; when the peer went away just
  // then, UCX 1.13's tcp transport aborted the process (tcp_ep.c:478, uct_tcp_ep_destroy_progress's assertion;
  // 4 in 1000 runs of the disconnect test, 0 in 1500 with kFlush).
  enum class EndpointClose { kForce, kFlush };

  void drop_peer(PeerId peer, EndpointClose mode) {
    std::lock_guard lock(worker_->mutex);
    auto it = peers_.find(peer);
    if (it == peers_.end() || !it->second.connected) return;
    Closing closing;
    close_peer_locked(peer, it->second, &closing, mode);
    it->second.failure = unavailable("peer " + std::to_string(peer) + " was disconnected");
    drain_locked(closing);
    forget_old_peers_locked();
  }

  void close_peer_locked(PeerId id, Peer& peer, Closing* closing, EndpointClose mode = EndpointClose::kForce) {
    close_endpoint_locked(peer, closing, mode);
    if (peer.connected) {
      peer.connected = false;
      peer.failure = unavailable("the peer was disconnected");
      dead_peers_.push_back(id);
    }
    current_by_uuid_.erase(peer.uuid);
  }

  // A peer's record outlives its connection, so that a caller still holding its id learns why it fails
  // (peer_status, submit_writes); the oldest go once more than kUcxRetainedDeadPeers died, their ids then unknown
  // (kNotFound). A cluster whose nodes come and go would otherwise keep a record per engine it ever met.
  void forget_old_peers_locked() {
    while (dead_peers_.size() > kUcxRetainedDeadPeers) {
      auto it = peers_.find(dead_peers_.front());
      if (it != peers_.end()) {
        if (it->second.endpoint != nullptr) return;  // closed after the progress call that failed it
        auto current = current_by_uuid_.find(it->second.uuid);
        if (current != current_by_uuid_.end() && current->second == it->first) current_by_uuid_.erase(current);
        peers_.erase(it);
      }
      dead_peers_.pop_front();
    }
  }

  // Closes the peer's endpoint; its remote keys go once the close finished (drain_locked), so no request of the
  // endpoint still uses one. The peer's state is the caller's to set.
  void close_endpoint_locked(Peer& peer, Closing* closing, EndpointClose mode) {
    for (auto& [id, imported] : peer.imported) {
      if (imported.rkey != nullptr) closing->rkeys.push_back(imported.rkey);
    }
    peer.imported.clear();
    if (peer.endpoint != nullptr) {
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = mode == EndpointClose::kForce ? UCP_EP_CLOSE_FLAG_FORCE : 0;
      ucs_status_ptr_t request = ucp_ep_close_nbx(peer.endpoint, &param);
      if (request != nullptr && UCS_PTR_IS_PTR(request)) closing->requests.push_back(request);
      peer.endpoint = nullptr;
    }
  }

  // Progresses until the endpoint closes finished, for at most kCloseTimeout (a forced close needs no answer from
  // the peer; a flushing one still pending then finishes or fails in the background), then destroys the remote
  // keys of the closed endpoints.
  void drain_locked(Closing& closing) {
    const Deadline deadline = Clock::now() + kCloseTimeout;
    for (ucs_status_ptr_t request : closing.requests) {
      while (ucp_request_check_status(request) == UCS_INPROGRESS && Clock::now() < deadline) {
        ucp_worker_progress(worker_->worker);
      }
      ucp_request_free(request);
    }
    for (ucp_rkey_h rkey : closing.rkeys) ucp_rkey_destroy(rkey);
    closing = {};
  }

  const std::string name_;
  const std::shared_ptr<UcxWorker> worker_;
  const uint64_t memory_types_;
  const WriteOperation write_operation_;
  const bool peer_failure_detection_;  // endpoints ask for UCP_ERR_HANDLING_MODE_PEER (detects_peer_failure)
  const uint64_t uuid_ = random_uuid();
  Bytes endpoint_;
  int event_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread progress_thread_;

  // Guarded by worker_->mutex.
  LocalRegionId next_region_id_ = 1;
  PeerId next_peer_id_ = 1;
  RemoteRegionId next_remote_region_id_ = 1;
  std::unordered_map<LocalRegionId, Region> regions_;
  std::unordered_map<PeerId, Peer> peers_;
  std::unordered_map<uint64_t, PeerId> current_by_uuid_;  // engine uuid -> its connected PeerId
  std::vector<PeerId> failed_peers_;                      // their endpoints failed and are still to be closed
  std::deque<PeerId> dead_peers_;                         // no longer connected, oldest first
  std::deque<PendingNotification> pending_notifications_;

  std::mutex inbox_mutex_;
  std::condition_variable inbox_changed_;
  std::deque<IncomingNotification> inbox_;
  StagedReceiver staged_;  // after the inbox: its failure wakes the inbox's waiters
};

}  // namespace

Result<std::unique_ptr<TransferEngine>> create_ucx_transfer_engine(const TransferEngineOptions& options,
                                                                   std::shared_ptr<DeviceCopier> device_copier) {
  RECGPT_ASSIGN_OR_RETURN(UcxSettings settings, parse_ucx_settings(options));
  const std::string name = options.name.empty() ? "ucx" : options.name;
  auto worker = std::make_shared<UcxWorker>();
  uint64_t memory_types = 0;
  RECGPT_RETURN_IF_ERROR(open_ucx_worker(settings, name, *worker, &memory_types));
  auto engine = std::make_unique<UcxTransferEngine>(name, std::move(worker), memory_types, settings.write_operation,
                                                    detects_peer_failure(settings.tls), std::move(device_copier));
  RECGPT_RETURN_IF_ERROR(engine->start());
  return std::unique_ptr<TransferEngine>(std::move(engine));
}

}  // namespace recgpt::kv
