// The `local` transfer backend: engines of one process write into each other's registered host memory with
// memmove. Used by unit tests and by colocated mode.
//
// Ownership: each engine owns an EngineCore through a shared_ptr; the process-wide registry and the engine's
// peers hold only weak_ptrs to it, so a destroyed engine is seen as kUnavailable, never as a dangling pointer.
// A peer copies into a core's regions under the shared side of the core's region lock; deregistration and
// destruction take the exclusive side, so once they return no peer can touch that memory. No thread ever holds
// the locks of two engines at once.
//
// Writes run synchronously inside submit_writes(), which returns an already-done handle, and notify()
// enqueues synchronously too: a notification trivially lands after the writes submitted before it.
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <shared_mutex>
#include <type_traits>
#include <unordered_map>

#include "kv_transfer/backends.h"

namespace recgpt::kv {
namespace {

constexpr uint32_t kEndpointMagic = 0x45434c52;   // "RLCE": recgpt local endpoint
constexpr uint32_t kRegionKeyMagic = 0x4b434c52;  // "RLCK": recgpt local region key

// Wire formats of the opaque bytes, in native byte order (both ends live in this process). The process nonce
// tells apart the engine ids of different processes.
struct EndpointWire {
  uint32_t magic = kEndpointMagic;
  uint32_t reserved = 0;
  uint64_t process_nonce = 0;
  uint64_t engine_id = 0;
};

struct RegionKeyWire {
  uint32_t magic = kRegionKeyMagic;
  LocalRegionId region = 0;
  uint64_t process_nonce = 0;
  uint64_t engine_id = 0;
  uint64_t bytes = 0;
};

static_assert(std::has_unique_object_representations_v<EndpointWire>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<RegionKeyWire>, "no padding on the wire");

template <typename Wire>
Bytes to_bytes(const Wire& wire) {
  Bytes bytes(sizeof(Wire));
  std::memcpy(bytes.data(), &wire, sizeof(Wire));
  return bytes;
}

template <typename Wire>
Result<Wire> parse_wire(std::span<const std::byte> bytes, uint32_t magic, const std::string& what) {
  if (bytes.size() != sizeof(Wire)) {
    return invalid_argument(what + " must be " + std::to_string(sizeof(Wire)) + " bytes, got " +
                            std::to_string(bytes.size()));
  }
  Wire wire;
  std::memcpy(&wire, bytes.data(), sizeof(Wire));
  if (wire.magic != magic) return invalid_argument(what + " is not from the local transfer backend (bad magic)");
  return wire;
}

std::string op_label(size_t index) { return "op " + std::to_string(index); }

std::string peer_label(PeerId peer, const std::string& name) {
  return "peer " + std::to_string(peer) + " ('" + name + "')";
}

// A byte range of a registered region, as named by one WriteOp (index in the batch = op index).
struct ByteRange {
  LocalRegionId region = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct HostRange {
  std::byte* base = nullptr;
  uint64_t bytes = 0;
  std::shared_ptr<std::byte[]> owned;  // memory from allocate_memory, freed with the registration
};

// The registered regions of one engine, written by its peers. Thread-safe.
class RegionTable {
 public:
  Result<LocalRegionId> add(const MemoryRegion& region, std::shared_ptr<std::byte[]> owned = nullptr) {
    std::unique_lock lock(mutex_);
    const LocalRegionId id = next_id_++;  // never reused: a stale key cannot name a newer region
    regions_[id] = {static_cast<std::byte*>(region.base), region.bytes, std::move(owned)};
    return id;
  }

  // Waits for the writes into the region in flight.
  Status remove(LocalRegionId id) {
    std::unique_lock lock(mutex_);
    if (regions_.erase(id) == 0) return not_found("region " + std::to_string(id) + " is not registered");
    return Status::ok();
  }

  Result<HostRange> find(LocalRegionId id) const {
    std::shared_lock lock(mutex_);
    auto it = regions_.find(id);
    if (it == regions_.end()) return not_found("region " + std::to_string(id) + " is not registered");
    return it->second;
  }

  bool is_open() const {
    std::shared_lock lock(mutex_);
    return !closed_;
  }

  // The address of every range; kInvalidArgument naming the first op whose range is not inside its region.
  // `side` ("local", "remote") names the ranges in errors.
  Result<std::vector<std::byte*>> locate(std::span<const ByteRange> ranges, const std::string& side) const {
    std::shared_lock lock(mutex_);
    return locate_locked(ranges, side);
  }

  // Checks every range, then copies sources[i] into ranges[i]; copies nothing if a range is refused.
  Status copy_into(std::span<const ByteRange> ranges, std::span<std::byte* const> sources) {
    std::shared_lock lock(mutex_);
    RECGPT_ASSIGN_OR_RETURN(std::vector<std::byte*> destinations, locate_locked(ranges, "remote"));
    // memmove, not memcpy: an engine connected to itself may write a region onto itself.
    for (size_t i = 0; i < ranges.size(); ++i) std::memmove(destinations[i], sources[i], ranges[i].length);
    return Status::ok();
  }

  // Once this returns no copy touches the engine's memory any more, and every later one is refused.
  void close() {
    std::unique_lock lock(mutex_);
    closed_ = true;
    regions_.clear();
  }

 private:
  Result<std::vector<std::byte*>> locate_locked(std::span<const ByteRange> ranges, const std::string& side) const {
    if (closed_) return unavailable("the engine was destroyed");
    std::vector<std::byte*> addresses;
    addresses.reserve(ranges.size());
    for (size_t i = 0; i < ranges.size(); ++i) {
      const ByteRange& range = ranges[i];
      auto it = regions_.find(range.region);
      if (it == regions_.end()) {
        return invalid_argument(op_label(i) + ": " + side + " region is not registered (id " +
                                std::to_string(range.region) + " at its engine)");
      }
      const HostRange& region = it->second;
      if (range.length > region.bytes || range.offset > region.bytes - range.length) {
        return invalid_argument(op_label(i) + ": " + side + " range at offset " + std::to_string(range.offset) +
                                " of " + std::to_string(range.length) + " bytes exceeds its region of " +
                                std::to_string(region.bytes) + " bytes");
      }
      addresses.push_back(region.base + range.offset);
    }
    return addresses;
  }

  mutable std::shared_mutex mutex_;
  bool closed_ = false;
  LocalRegionId next_id_ = 1;
  std::unordered_map<LocalRegionId, HostRange> regions_;
};

class EngineCore;

// What a PeerId leads to.
struct PeerLink {
  uint64_t engine_id = 0;
  std::string name;
  std::weak_ptr<EngineCore> core;
};

// The peers of one engine: those it connected to and those that contacted it. Thread-safe.
class PeerTable {
 public:
  // The connected peer for that engine, or a new one: one PeerId per remote engine, so the id a receiver got
  // from connect() is also the one its notifications from that engine carry.
  PeerId peer_for(const PeerLink& link) {
    std::lock_guard lock(mutex_);
    auto current = current_by_engine_.find(link.engine_id);
    if (current != current_by_engine_.end()) return current->second;
    const PeerId id = next_peer_id_++;
    peers_[id] = Peer{link, {}};
    current_by_engine_[link.engine_id] = id;
    return id;
  }

  // kNotFound for an id never issued, kUnavailable once disconnected.
  Result<PeerLink> link(PeerId peer) {
    std::lock_guard lock(mutex_);
    RECGPT_ASSIGN_OR_RETURN(Peer * found, find_connected(peer));
    return found->link;
  }

  Result<RemoteRegionId> add_imported(PeerId peer, LocalRegionId region_at_peer) {
    std::lock_guard lock(mutex_);
    RECGPT_ASSIGN_OR_RETURN(Peer * found, find_connected(peer));
    const RemoteRegionId id = next_remote_region_id_++;
    found->imported[id] = region_at_peer;
    return id;
  }

  // The peer's own region ids for the remote side of every op; kInvalidArgument naming an op whose remote
  // region was not imported from this peer.
  Result<std::vector<ByteRange>> remote_ranges(PeerId peer, std::span<const WriteOp> ops) {
    std::lock_guard lock(mutex_);
    RECGPT_ASSIGN_OR_RETURN(Peer * found, find_connected(peer));
    std::vector<ByteRange> ranges;
    ranges.reserve(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      auto it = found->imported.find(ops[i].remote_region);
      if (it == found->imported.end()) {
        return invalid_argument(op_label(i) + ": remote region " + std::to_string(ops[i].remote_region) +
                                " was not imported from " + peer_label(peer, found->link.name));
      }
      ranges.push_back({it->second, ops[i].remote_offset, ops[i].length});
    }
    return ranges;
  }

  void disconnect(PeerId peer) {
    std::lock_guard lock(mutex_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || !it->second.connected) return;
    it->second.connected = false;
    it->second.imported.clear();
    current_by_engine_.erase(it->second.link.engine_id);
  }

 private:
  struct Peer {
    PeerLink link;
    std::unordered_map<RemoteRegionId, LocalRegionId> imported;  // our id -> the peer's region id
    bool connected = true;
  };

  Result<Peer*> find_connected(PeerId peer) {
    auto it = peers_.find(peer);
    if (it == peers_.end()) return not_found("unknown peer " + std::to_string(peer));
    if (!it->second.connected) return unavailable(peer_label(peer, it->second.link.name) + " was disconnected");
    return &it->second;
  }

  std::mutex mutex_;
  PeerId next_peer_id_ = 1;
  RemoteRegionId next_remote_region_id_ = 1;
  std::unordered_map<PeerId, Peer> peers_;
  std::unordered_map<uint64_t, PeerId> current_by_engine_;  // engine id -> its connected PeerId
};

// Notifications received and not yet taken. Thread-safe.
class Inbox {
 public:
  void push(Notification notification) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(notification));
    }
    arrived_.notify_one();
  }

  std::optional<Notification> pop(Deadline deadline) {
    std::unique_lock lock(mutex_);
    if (!arrived_.wait_until(lock, deadline, [this] { return !queue_.empty(); })) return std::nullopt;
    Notification notification = std::move(queue_.front());
    queue_.pop_front();
    return notification;
  }

 private:
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<Notification> queue_;
};

// The part of an engine its peers reach (through weak_ptrs).
class EngineCore {
 public:
  EngineCore(uint64_t id, std::string name) : id_(id), name_(std::move(name)) {}

  uint64_t id() const { return id_; }
  const std::string& name() const { return name_; }

  RegionTable regions;
  PeerTable peers;
  Inbox inbox;

 private:
  const uint64_t id_;
  const std::string name_;
};

// Every live local engine of the process, by id.
class Registry {
 public:
  uint64_t process_nonce() const { return process_nonce_; }

  std::shared_ptr<EngineCore> add(const std::string& name) {
    std::lock_guard lock(mutex_);
    const uint64_t id = next_engine_id_++;  // never reused: an old endpoint cannot reach a newer engine
    auto core = std::make_shared<EngineCore>(id, name.empty() ? "local-" + std::to_string(id) : name);
    engines_[id] = core;
    return core;
  }

  void remove(uint64_t id) {
    std::lock_guard lock(mutex_);
    engines_.erase(id);
  }

  std::shared_ptr<EngineCore> find(uint64_t id) const {
    std::lock_guard lock(mutex_);
    auto it = engines_.find(id);
    return it == engines_.end() ? nullptr : it->second.lock();
  }

 private:
  static uint64_t random_nonce() {
    std::random_device random;
    return (static_cast<uint64_t>(random()) << 32) ^ random();
  }

  const uint64_t process_nonce_ = random_nonce();
  mutable std::mutex mutex_;
  uint64_t next_engine_id_ = 1;
  std::unordered_map<uint64_t, std::weak_ptr<EngineCore>> engines_;
};

// Leaked on purpose: engines destroyed during static destruction must still find it.
Registry& registry() {
  static Registry* const instance = new Registry();
  return *instance;
}

// The handle of work finished inside the call that issued it. Stateless, hence thread-safe.
class CompletedHandle final : public TransferHandle {
 public:
  TransferState poll() override { return TransferState::kDone; }
  Status wait(Deadline) override { return Status::ok(); }
  void cancel() override {}
  Status status() override { return Status::ok(); }
};

class LocalTransferEngine final : public TransferEngine {
 public:
  explicit LocalTransferEngine(std::shared_ptr<EngineCore> core) : core_(std::move(core)) {}

  ~LocalTransferEngine() override {
    registry().remove(core_->id());
    core_->regions.close();
  }

  std::string_view backend_name() const override { return "local"; }

  Result<LocalRegionId> register_memory(const MemoryRegion& region) override {
    if (region.kind != MemoryKind::kHost) {
      return invalid_argument("the local transfer backend reaches host memory only, got MemoryKind::kCuda (device " +
                              std::to_string(region.cuda_device) + ")");
    }
    if (region.base == nullptr) return invalid_argument("cannot register a region with a null base");
    if (region.bytes == 0) return invalid_argument("cannot register an empty region");
    return core_->regions.add(region);
  }

  Result<AllocatedRegion> allocate_memory(size_t bytes) override {
    if (bytes == 0) return invalid_argument("cannot allocate an empty region");
    std::shared_ptr<std::byte[]> owned(new (std::nothrow) std::byte[bytes]());
    if (owned == nullptr) return resource_exhausted("cannot allocate " + std::to_string(bytes) + " bytes");
    RECGPT_ASSIGN_OR_RETURN(LocalRegionId id, core_->regions.add({owned.get(), bytes, MemoryKind::kHost, -1}, owned));
    return AllocatedRegion{id, owned.get()};
  }

  Status deregister_memory(LocalRegionId region) override { return core_->regions.remove(region); }

  Result<Bytes> export_region(LocalRegionId region) override {
    RECGPT_ASSIGN_OR_RETURN(HostRange range, core_->regions.find(region));
    RegionKeyWire key;
    key.region = region;
    key.process_nonce = registry().process_nonce();
    key.engine_id = core_->id();
    key.bytes = range.bytes;
    return to_bytes(key);
  }

  Result<Bytes> local_endpoint() override {
    EndpointWire endpoint;
    endpoint.process_nonce = registry().process_nonce();
    endpoint.engine_id = core_->id();
    return to_bytes(endpoint);
  }

  // Immediate in this backend: the deadline cannot pass.
  Result<PeerId> connect(std::span<const std::byte> endpoint_bytes, Deadline) override {
    RECGPT_ASSIGN_OR_RETURN(EndpointWire endpoint,
                            parse_wire<EndpointWire>(endpoint_bytes, kEndpointMagic, "a local endpoint"));
    if (endpoint.process_nonce != registry().process_nonce()) {
      return unavailable("the endpoint is of a local engine in another process");
    }
    std::shared_ptr<EngineCore> target = registry().find(endpoint.engine_id);
    if (target == nullptr || !target->regions.is_open()) {
      return unavailable("local engine " + std::to_string(endpoint.engine_id) + " no longer exists");
    }
    return core_->peers.peer_for({target->id(), target->name(), target});
  }

  // connect() sets nothing up in this backend either, and is immediate.
  Result<PeerId> watch(std::span<const std::byte> endpoint) override { return connect(endpoint, Clock::now()); }

  Result<RemoteRegionId> import_region(PeerId peer, std::span<const std::byte> key_bytes) override {
    RECGPT_ASSIGN_OR_RETURN(PeerLink link, core_->peers.link(peer));
    RECGPT_ASSIGN_OR_RETURN(RegionKeyWire key,
                            parse_wire<RegionKeyWire>(key_bytes, kRegionKeyMagic, "a local region key"));
    if (key.process_nonce != registry().process_nonce() || key.engine_id != link.engine_id) {
      return invalid_argument("the region key was exported by another engine than " + peer_label(peer, link.name));
    }
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<EngineCore> target, live_core(peer, link));
    Result<HostRange> region = target->regions.find(key.region);
    if (!region.is_ok()) {
      return invalid_argument("the region key names region " + std::to_string(key.region) + " that " +
                              peer_label(peer, link.name) + " no longer has registered");
    }
    if (region->bytes != key.bytes) {
      return invalid_argument("the region key says " + std::to_string(key.bytes) + " bytes but the region has " +
                              std::to_string(region->bytes));
    }
    return core_->peers.add_imported(peer, key.region);
  }

  void disconnect(PeerId peer) override { core_->peers.disconnect(peer); }

  Result<std::unique_ptr<TransferHandle>> submit_writes(PeerId peer, std::span<const WriteOp> ops) override {
    RECGPT_ASSIGN_OR_RETURN(PeerLink link, core_->peers.link(peer));
    RECGPT_ASSIGN_OR_RETURN(std::vector<ByteRange> remote, core_->peers.remote_ranges(peer, ops));
    std::vector<ByteRange> local;
    local.reserve(ops.size());
    for (const WriteOp& op : ops) local.push_back({op.local_region, op.local_offset, op.length});
    RECGPT_ASSIGN_OR_RETURN(std::vector<std::byte*> sources, core_->regions.locate(local, "local"));
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<EngineCore> target, live_core(peer, link));
    Status copied = target->regions.copy_into(remote, sources);
    if (copied.code() == StatusCode::kUnavailable) return unavailable(peer_label(peer, link.name) + " was destroyed");
    RECGPT_RETURN_IF_ERROR(copied);
    return std::unique_ptr<TransferHandle>(std::make_unique<CompletedHandle>());
  }

  Result<std::unique_ptr<TransferHandle>> notify(PeerId peer, std::span<const std::byte> message) override {
    RECGPT_ASSIGN_OR_RETURN(PeerLink link, core_->peers.link(peer));
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<EngineCore> target, live_core(peer, link));
    const PeerId sender_at_target = target->peers.peer_for({core_->id(), core_->name(), core_});
    target->inbox.push({sender_at_target, Bytes(message.begin(), message.end())});
    return std::unique_ptr<TransferHandle>(std::make_unique<CompletedHandle>());
  }

  Result<std::optional<Notification>> wait_notification(Deadline deadline) override {
    return core_->inbox.pop(deadline);
  }

  Status peer_status(PeerId peer) override {
    RECGPT_ASSIGN_OR_RETURN(PeerLink link, core_->peers.link(peer));
    return live_core(peer, link).status();
  }

 private:
  // The peer's core while its engine lives; kUnavailable once it was destroyed.
  static Result<std::shared_ptr<EngineCore>> live_core(PeerId peer, const PeerLink& link) {
    std::shared_ptr<EngineCore> target = link.core.lock();
    if (target == nullptr || !target->regions.is_open()) {
      return unavailable(peer_label(peer, link.name) + " was destroyed");
    }
    return target;
  }

  std::shared_ptr<EngineCore> core_;
};

}  // namespace

Result<std::unique_ptr<TransferEngine>> create_local_transfer_engine(const TransferEngineOptions& options) {
  if (!options.settings.empty()) {
    return invalid_argument("the local transfer backend takes no settings, got '" + options.settings.front().first +
                            "'");
  }
  return std::unique_ptr<TransferEngine>(std::make_unique<LocalTransferEngine>(registry().add(options.name)));
}

}  // namespace recgpt::kv
