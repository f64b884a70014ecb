#include "kv_transfer/kv_stream.h"

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

namespace recgpt::kv {
namespace {

constexpr uint32_t kNotificationMagic = 0x53564b52;  // "RKVS" read little-endian
constexpr uint8_t kNotificationVersion = 1;
constexpr uint8_t kHasChecksum = 0x01;
constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
// Notifications taken at once after a peer was seen dead, so that one sent before its death still counts.
constexpr int kMaxDrainedNotifications = 1024;

Status malformed(const std::string& what) { return invalid_argument("KV stream notification: " + what); }

class WireWriter {
 public:
  void integer(uint64_t value, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) bytes_.push_back(static_cast<std::byte>((value >> (8 * i)) & 0xff));
  }
  void text(const std::string& text) {
    for (char c : text) bytes_.push_back(static_cast<std::byte>(c));
  }
  Bytes take() { return std::move(bytes_); }

 private:
  Bytes bytes_;
};

// Bounds-checked little-endian reads of a message.
class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> bytes) : bytes_(bytes) {}

  Result<uint64_t> integer(size_t bytes, const char* field) {
    RECGPT_RETURN_IF_ERROR(take(bytes, field));
    uint64_t value = 0;
    for (size_t i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(bytes_[offset_ - bytes + i]) << (8 * i);
    return value;
  }

  Result<std::string> text(size_t bytes, const char* field) {
    RECGPT_RETURN_IF_ERROR(take(bytes, field));
    return std::string(reinterpret_cast<const char*>(bytes_.data() + offset_ - bytes), bytes);
  }

  size_t remaining() const { return bytes_.size() - offset_; }

 private:
  Status take(size_t bytes, const char* field) {
    if (remaining() < bytes) {
      return malformed(std::string("truncated in ") + field + " at byte " + std::to_string(offset_) + " (needs " +
                       std::to_string(bytes) + " bytes, " + std::to_string(remaining()) + " left)");
    }
    offset_ += bytes;
    return Status::ok();
  }

  std::span<const std::byte> bytes_;
  size_t offset_ = 0;
};

Status check_request_id(const std::string& request_id) {
  if (request_id.empty() || request_id.size() > kMaxRequestIdBytes) {
    return invalid_argument("request id of " + std::to_string(request_id.size()) + " bytes is outside [1, " +
                            std::to_string(kMaxRequestIdBytes) + "]");
  }
  return Status::ok();
}

Status check_layers(std::span<const int32_t> layers) {
  if (layers.size() > kMaxStreamLayers) {
    return invalid_argument(std::to_string(layers.size()) + " layers exceed the limit of " +
                            std::to_string(kMaxStreamLayers));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || (i > 0 && layers[i] <= layers[i - 1])) {
      return invalid_argument("layer " + std::to_string(layers[i]) + " at index " + std::to_string(i) +
                              " is negative or not above the previous one");
    }
  }
  return Status::ok();
}

Status check_blocks_in_range(std::span<const int32_t> blocks, int64_t num_blocks, const char* side) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i] < 0 || blocks[i] >= num_blocks) {
      return invalid_argument(std::string(side) + " block id " + std::to_string(blocks[i]) + " at index " +
                              std::to_string(i) + " is outside [0, " + std::to_string(num_blocks) + ")");
    }
  }
  return Status::ok();
}

// Two sources written into one destination block would leave it holding either.
Status check_distinct(std::span<const int32_t> blocks, const char* side) {
  std::set<int32_t> seen;
  for (int32_t block : blocks) {
    if (!seen.insert(block).second) {
      return invalid_argument(std::string(side) + " block id " + std::to_string(block) + " appears twice");
    }
  }
  return Status::ok();
}

std::string request_label(const std::string& request_id) { return "request '" + request_id + "'"; }

}  // namespace

// ---- Wire format -----------------------------------------------------------------------------------------------

// `started` says only who writes: no layers, no checksum.
Status check_started_is_bare(const StreamNotification& notification) {
  if (notification.kind != StreamEventKind::kStarted || (notification.layers.empty() && !notification.checksum)) {
    return Status::ok();
  }
  return malformed("a started notification carries no layers and no checksum");
}

Result<Bytes> encode_stream_notification(const StreamNotification& notification) {
  RECGPT_RETURN_IF_ERROR(check_request_id(notification.request_id).with_context("KV stream notification"));
  RECGPT_RETURN_IF_ERROR(check_layers(notification.layers).with_context("KV stream notification"));
  RECGPT_RETURN_IF_ERROR(check_started_is_bare(notification));
  WireWriter wire;
  wire.integer(kNotificationMagic, 4);
  wire.integer(kNotificationVersion, 1);
  wire.integer(static_cast<uint8_t>(notification.kind), 1);
  wire.integer(notification.checksum.has_value() ? kHasChecksum : 0, 1);
  wire.integer(0, 1);  // reserved
  wire.integer(notification.request_id.size(), 2);
  wire.text(notification.request_id);
  wire.integer(notification.layers.size(), 4);
  for (int32_t layer : notification.layers) wire.integer(static_cast<uint32_t>(layer), 4);
  if (notification.checksum.has_value()) wire.integer(*notification.checksum, 8);
  return wire.take();
}

Result<StreamNotification> decode_stream_notification(std::span<const std::byte> message) {
  WireReader wire(message);
  RECGPT_ASSIGN_OR_RETURN(uint64_t magic, wire.integer(4, "magic"));
  if (magic != kNotificationMagic) return malformed("bad magic " + std::to_string(magic));
  RECGPT_ASSIGN_OR_RETURN(uint64_t version, wire.integer(1, "version"));
  if (version != kNotificationVersion) {
    return malformed("unsupported version " + std::to_string(version) + " (this build reads version 1)");
  }
  RECGPT_ASSIGN_OR_RETURN(uint64_t kind, wire.integer(1, "kind"));
  if (kind != static_cast<uint8_t>(StreamEventKind::kCompleted) &&
      kind != static_cast<uint8_t>(StreamEventKind::kAborted) &&
      kind != static_cast<uint8_t>(StreamEventKind::kStarted)) {
    return malformed("unknown kind " + std::to_string(kind));
  }
  RECGPT_ASSIGN_OR_RETURN(uint64_t flags, wire.integer(1, "flags"));
  if ((flags & ~uint64_t{kHasChecksum}) != 0) return malformed("unknown flags " + std::to_string(flags));
  RECGPT_ASSIGN_OR_RETURN(uint64_t reserved, wire.integer(1, "reserved"));
  if (reserved != 0) return malformed("reserved byte is " + std::to_string(reserved) + ", not 0");
  RECGPT_ASSIGN_OR_RETURN(uint64_t id_bytes, wire.integer(2, "request id length"));
  if (id_bytes == 0 || id_bytes > kMaxRequestIdBytes) {
    return malformed("request id length " + std::to_string(id_bytes) + " is outside [1, " +
                     std::to_string(kMaxRequestIdBytes) + "]");
  }
  StreamNotification notification;
  notification.kind = static_cast<StreamEventKind>(kind);
  RECGPT_ASSIGN_OR_RETURN(notification.request_id, wire.text(id_bytes, "request id"));
  RECGPT_ASSIGN_OR_RETURN(uint64_t layer_count, wire.integer(4, "layer count"));
  if (layer_count > kMaxStreamLayers) {
    return malformed("layer count " + std::to_string(layer_count) + " exceeds " + std::to_string(kMaxStreamLayers));
  }
  for (uint64_t i = 0; i < layer_count; ++i) {
    RECGPT_ASSIGN_OR_RETURN(uint64_t layer, wire.integer(4, "layers"));
    if (layer > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()) ||
        (i > 0 && static_cast<int64_t>(layer) <= notification.layers.back())) {
      return malformed("layer " + std::to_string(layer) + " at index " + std::to_string(i) +
                       " is not above the previous one or exceeds INT32_MAX");
    }
    notification.layers.push_back(static_cast<int32_t>(layer));
  }
  if ((flags & kHasChecksum) != 0) {
    RECGPT_ASSIGN_OR_RETURN(notification.checksum, wire.integer(8, "checksum"));
  }
  if (wire.remaining() != 0) return malformed(std::to_string(wire.remaining()) + " trailing bytes");
  RECGPT_RETURN_IF_ERROR(check_started_is_bare(notification));
  return notification;
}

uint64_t kv_stream_checksum(const std::byte* memory, const KvLayoutDescription& layout, std::span<const int32_t> blocks,
                            std::span<const int32_t> layers, int last_block_tokens) {
  RECGPT_CHECK(memory != nullptr);
  RECGPT_CHECK(validate_layout(layout).is_ok());
  RECGPT_CHECK(last_block_tokens >= 0 && last_block_tokens <= layout.block_size);
  const uint64_t block_bytes = layout.block_bytes();
  const uint64_t last_block_bytes =
      last_block_tokens == 0 ? block_bytes : block_bytes / static_cast<uint64_t>(layout.block_size) * last_block_tokens;
  uint64_t hash = kFnvOffsetBasis;
  for (int32_t layer : layers) {
    RECGPT_CHECK(layer >= 0 && layer < layout.num_layers);
    for (uint64_t array = 0; array < 2; ++array) {  // K, then V
      const std::byte* array_base = memory + (2 * static_cast<uint64_t>(layer) + array) * layout.array_stride_bytes;
      for (size_t b = 0; b < blocks.size(); ++b) {
        RECGPT_CHECK(blocks[b] >= 0 && blocks[b] < layout.num_blocks);
        const std::byte* bytes = array_base + static_cast<uint64_t>(blocks[b]) * block_bytes;
        const uint64_t length = b + 1 == blocks.size() ? last_block_bytes : block_bytes;
        for (uint64_t i = 0; i < length; ++i) hash = (hash ^ static_cast<uint8_t>(bytes[i])) * kFnvPrime;
      }
    }
  }
  return hash;
}

// ---- Writer ----------------------------------------------------------------------------------------------------

Result<std::unique_ptr<KvStreamWriter>> KvStreamWriter::create(TransferEngine& engine, KvStreamWriterConfig config) {
  RECGPT_RETURN_IF_ERROR(check_request_id(config.request_id));
  const std::string label = request_label(config.request_id);
  RECGPT_RETURN_IF_ERROR(check_layouts_match(config.source_layout, config.destination_layout).with_context(label));
  if (static_cast<size_t>(config.source_layout.num_layers) > kMaxStreamLayers) {
    return invalid_argument(label + ": " + std::to_string(config.source_layout.num_layers) +
                            " layers exceed the stream limit of " + std::to_string(kMaxStreamLayers));
  }
  // layer_copies() checks the lengths and ids of the block lists; layer 0 exists in every valid layout.
  RECGPT_RETURN_IF_ERROR(layer_copies(config.source_layout, config.source_blocks, config.destination_layout,
                                      config.destination_blocks, 0, config.last_block_tokens)
                             .status()
                             .with_context(label));
  RECGPT_RETURN_IF_ERROR(check_distinct(config.destination_blocks, "destination").with_context(label));
  return std::unique_ptr<KvStreamWriter>(new KvStreamWriter(engine, std::move(config)));
}

namespace {

// A notification with no layers and no checksum.
Result<std::unique_ptr<TransferHandle>> send_bare(TransferEngine& engine, PeerId peer, StreamEventKind kind,
                                                  const std::string& request_id) {
  RECGPT_ASSIGN_OR_RETURN(Bytes message, encode_stream_notification({kind, request_id, {}, std::nullopt}));
  return engine.notify(peer, message);
}

}  // namespace

Result<std::unique_ptr<TransferHandle>> send_started(TransferEngine& engine, PeerId peer,
                                                     const std::string& request_id) {
  return send_bare(engine, peer, StreamEventKind::kStarted, request_id);
}

Result<std::unique_ptr<TransferHandle>> send_unwritten_aborted(TransferEngine& engine, PeerId peer,
                                                               const std::string& request_id) {
  return send_bare(engine, peer, StreamEventKind::kAborted, request_id);
}

KvStreamWriter::KvStreamWriter(TransferEngine& engine, KvStreamWriterConfig config)
    : engine_(engine), config_(std::move(config)), layer_written_(config_.source_layout.num_layers, false) {
  Result<std::unique_ptr<TransferHandle>> sent = send_started(engine_, config_.peer, config_.request_id);
  if (sent.is_ok()) {
    started_ = std::move(sent).value();
  } else {
    failure_ = sent.status().with_context(request_label(config_.request_id) + ": sending started");
  }
}

KvStreamWriter::~KvStreamWriter() { abort(); }

Status KvStreamWriter::write_layer(int layer) {
  const std::string label = request_label(config_.request_id) + ", layer " + std::to_string(layer);
  if (state_ != State::kOpen) return failed_precondition(label + ": the stream was already finished or aborted");
  if (!failure_.is_ok()) return failed_precondition(label + ": an earlier write failed: " + failure_.message());
  if (layer < 0 || layer >= config_.source_layout.num_layers) {
    return invalid_argument(label + ": outside [0, " + std::to_string(config_.source_layout.num_layers) + ")");
  }
  if (layer_written_[layer]) return failed_precondition(label + ": already written");
  RECGPT_ASSIGN_OR_RETURN(std::vector<BlockCopy> copies,
                          layer_copies(config_.source_layout, config_.source_blocks, config_.destination_layout,
                                       config_.destination_blocks, layer, config_.last_block_tokens));
  std::vector<WriteOp> ops;
  ops.reserve(copies.size());
  for (const BlockCopy& copy : copies) {
    ops.push_back(
        {config_.source_region, copy.source_offset, config_.destination_region, copy.destination_offset, copy.length});
  }
  if (!ops.empty()) {
    Result<std::unique_ptr<TransferHandle>> handle = engine_.submit_writes(config_.peer, ops);
    if (!handle.is_ok()) {
      failure_ = handle.status().with_context(label);
      return failure_;
    }
    in_flight_.emplace_back(layer, std::move(handle).value());
  }
  layer_written_[layer] = true;
  return Status::ok();
}

Status KvStreamWriter::finish(Deadline deadline, const std::function<bool()>& give_up) {
  if (state_ != State::kOpen) {
    return failed_precondition(request_label(config_.request_id) + ": the stream was already finished or aborted");
  }
  Status result = failure_.is_ok() ? wait_and_notify_completed(deadline, give_up) : failure_;
  if (!result.is_ok()) {
    cancel_in_flight();
    send_aborted(Clock::now() + kAbortNotifyTimeout);
    state_ = State::kAborted;
    return result;
  }
  state_ = State::kFinished;
  return Status::ok();
}

void KvStreamWriter::abort() {
  if (state_ != State::kOpen) return;
  cancel_in_flight();
  send_aborted(Clock::now() + kAbortNotifyTimeout);
  state_ = State::kAborted;
}

std::vector<int32_t> KvStreamWriter::written_layers() const {
  std::vector<int32_t> layers;
  for (size_t layer = 0; layer < layer_written_.size(); ++layer) {
    if (layer_written_[layer]) layers.push_back(static_cast<int32_t>(layer));
  }
  return layers;
}

void KvStreamWriter::cancel_in_flight() {
  if (started_ != nullptr) started_->cancel();
  started_.reset();
  for (auto& [layer, handle] : in_flight_) handle->cancel();
  in_flight_.clear();
}

void KvStreamWriter::send_aborted(Deadline deadline) {
  StreamNotification notification{StreamEventKind::kAborted, config_.request_id, written_layers(), std::nullopt};
  Result<Bytes> message = encode_stream_notification(notification);
  if (!message.is_ok()) return;  // cannot happen: create() checked the id and the layer count
  Result<std::unique_ptr<TransferHandle>> sent = engine_.notify(config_.peer, message.value());
  if (sent.is_ok() && !sent.value()->wait(deadline).is_ok()) sent.value()->cancel();
}

Status KvStreamWriter::wait_and_notify_completed(Deadline deadline, const std::function<bool()>& give_up) {
  const std::string label = request_label(config_.request_id);
  // In slices while someone may give up: a handle's wait that times out leaves its batch in flight.
  const auto wait = [&](TransferHandle& handle) -> Status {
    if (!give_up) return handle.wait(deadline);
    for (;;) {
      const Deadline slice = std::min(deadline, Clock::now() + kGiveUpPoll);
      Status status = handle.wait(slice);
      if (status.code() != StatusCode::kDeadlineExceeded || slice == deadline) return status;
      if (give_up()) return failed_precondition("the writer gave up waiting for its writes");
    }
  };
  if (started_ != nullptr) RECGPT_RETURN_IF_ERROR(wait(*started_).with_context(label + ": sending started"));
  for (auto& [layer, handle] : in_flight_) {
    RECGPT_RETURN_IF_ERROR(wait(*handle).with_context(label + ", layer " + std::to_string(layer)));
  }
  StreamNotification notification{StreamEventKind::kCompleted, config_.request_id, written_layers(), std::nullopt};
  if (config_.checksum_source != nullptr) {
    notification.checksum = kv_stream_checksum(config_.checksum_source, config_.source_layout, config_.source_blocks,
                                               notification.layers, config_.last_block_tokens);
  }
  RECGPT_ASSIGN_OR_RETURN(Bytes message, encode_stream_notification(notification));
  Result<std::unique_ptr<TransferHandle>> sent = engine_.notify(config_.peer, message);
  if (!sent.is_ok()) return sent.status().with_context(label + ": sending completed");
  Status delivered = wait(*sent.value());
  if (!delivered.is_ok()) {
    sent.value()->cancel();
    return delivered.with_context(label + ": sending completed");
  }
  in_flight_.clear();
  return Status::ok();
}

// ---- Receiver --------------------------------------------------------------------------------------------------

struct KvStreamReceiver::Expectation {
  PeerId peer = 0;
  Deadline deadline;
  std::optional<KvStreamDestination> destination;
  std::optional<StreamNotification> notification;  // the first one from `peer`
  Status peer_failure;                             // non-ok once the peer was seen dead first

  bool resolved() const { return notification.has_value() || !peer_failure.is_ok(); }
};

KvStreamReceiver::KvStreamReceiver(TransferEngine& engine) : engine_(engine), poller_([this] { poll_loop(); }) {}

KvStreamReceiver::~KvStreamReceiver() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  poller_.join();
}

Status KvStreamReceiver::expect(const std::string& request_id, PeerId peer, Deadline deadline,
                                std::optional<KvStreamDestination> destination) {
  RECGPT_RETURN_IF_ERROR(check_request_id(request_id));
  const std::string label = request_label(request_id);
  if (destination.has_value()) {
    if (destination->memory == nullptr) return invalid_argument(label + ": destination memory is null");
    RECGPT_RETURN_IF_ERROR(validate_layout(destination->layout).with_context(label + ": destination"));
    RECGPT_RETURN_IF_ERROR(
        check_blocks_in_range(destination->blocks, destination->layout.num_blocks, "destination").with_context(label));
    if (destination->last_block_tokens < 0 || destination->last_block_tokens > destination->layout.block_size) {
      return invalid_argument(label + ": destination last_block_tokens " +
                              std::to_string(destination->last_block_tokens) + " is outside [0, block_size]");
    }
  }
  RECGPT_RETURN_IF_ERROR(engine_.peer_status(peer).with_context(label + ": peer " + std::to_string(peer)));
  auto expectation = std::make_shared<Expectation>();
  expectation->peer = peer;
  expectation->deadline = deadline;
  expectation->destination = std::move(destination);
  std::lock_guard lock(mutex_);
  if (!expected_.emplace(request_id, std::move(expectation)).second) {
    return failed_precondition(label + " is already expected");
  }
  return Status::ok();
}

Result<KvStreamCompletion> KvStreamReceiver::wait(const std::string& request_id, Deadline deadline) {
  const std::string label = request_label(request_id);
  std::unique_lock lock(mutex_);
  auto found = expected_.find(request_id);
  if (found == expected_.end()) return not_found(label + " is not expected (never, or no longer)");
  const std::shared_ptr<Expectation> expectation = found->second;
  const Deadline until = std::min(deadline, expectation->deadline);
  if (!resolved_.wait_until(lock, until, [&] { return expectation->resolved(); })) {
    if (Clock::now() >= expectation->deadline) erase_if_same(request_id, expectation);
    return deadline_exceeded(label + ": no notification from peer " + std::to_string(expectation->peer) +
                             " before the deadline");
  }
  erase_if_same(request_id, expectation);
  lock.unlock();  // the expectation is ours alone now: resolved, and no longer in expected_

  if (!expectation->notification.has_value()) return expectation->peer_failure;
  const StreamNotification& notification = *expectation->notification;
  if (notification.kind == StreamEventKind::kAborted) {
    return unavailable(label + ": the writer at peer " + std::to_string(expectation->peer) + " aborted the transfer");
  }
  KvStreamCompletion completion{notification.layers, false};
  if (!expectation->destination.has_value()) return completion;
  const KvStreamDestination& destination = *expectation->destination;
  for (int32_t layer : notification.layers) {
    if (layer >= destination.layout.num_layers) {
      return data_loss(label + ": the writer reports layer " + std::to_string(layer) + " but the destination has " +
                       std::to_string(destination.layout.num_layers));
    }
  }
  if (!notification.checksum.has_value()) return completion;
  const uint64_t checksum = kv_stream_checksum(destination.memory, destination.layout, destination.blocks,
                                               notification.layers, destination.last_block_tokens);
  if (checksum != *notification.checksum) {
    return data_loss(label + ": checksum of the destination blocks " + std::to_string(checksum) +
                     " differs from the writer's " + std::to_string(*notification.checksum));
  }
  completion.checksum_verified = true;
  return completion;
}

void KvStreamReceiver::forget(const std::string& request_id) {
  std::lock_guard lock(mutex_);
  expected_.erase(request_id);
}

KvStreamReceiverCounters KvStreamReceiver::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void KvStreamReceiver::erase_if_same(const std::string& request_id, const std::shared_ptr<Expectation>& expectation) {
  auto found = expected_.find(request_id);
  if (found != expected_.end() && found->second == expectation) expected_.erase(found);
}

void KvStreamReceiver::poll_loop() {
  Deadline next_peer_check = Clock::now();
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    if (Clock::now() >= next_peer_check) {
      check_peers();
      prune_lapsed();
      next_peer_check = Clock::now() + kPollSlice;
    }
    receive_one(Clock::now() + kPollSlice);
  }
}

// Peers die silently (no notification): each pending request's peer is asked in turn.
void KvStreamReceiver::check_peers() {
  std::set<PeerId> peers;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [request_id, expectation] : expected_) {
      if (!expectation->resolved()) peers.insert(expectation->peer);
    }
  }
  std::vector<std::pair<PeerId, Status>> dead;
  for (PeerId peer : peers) {
    Status status = engine_.peer_status(peer);
    if (!status.is_ok()) dead.emplace_back(peer, std::move(status));
  }
  if (dead.empty()) return;
  // What a peer sent before it died is already here (local backend) and wins over its death.
  for (int i = 0; i < kMaxDrainedNotifications && receive_one(Clock::now()); ++i) {
  }
  resolve_dead_peers(dead);
}

// Takes one notification, waiting until `deadline`; false when none came.
bool KvStreamReceiver::receive_one(Deadline deadline) {
  Result<std::optional<Notification>> received = engine_.wait_notification(deadline);
  if (!received.is_ok()) {
    {
      std::lock_guard lock(mutex_);
      ++counters_.receive_errors;
    }
    std::this_thread::sleep_until(deadline);  // a failing engine must not make the poller spin
    return false;
  }
  if (!received.value().has_value()) return false;
  dispatch(*received.value());
  return true;
}

void KvStreamReceiver::dispatch(const Notification& notification) {
  Result<StreamNotification> decoded = decode_stream_notification(notification.message);
  std::lock_guard lock(mutex_);
  if (!decoded.is_ok()) {
    ++counters_.malformed;
    return;
  }
  if (decoded->kind == StreamEventKind::kStarted) return;  // the expectation names its writer already
  auto found = expected_.find(decoded->request_id);
  if (found == expected_.end() || found->second->peer != notification.peer || found->second->resolved()) {
    ++counters_.unexpected;
    return;
  }
  ++(decoded->kind == StreamEventKind::kCompleted ? counters_.completed : counters_.aborted);
  found->second->notification = std::move(decoded).value();
  resolved_.notify_all();
}

void KvStreamReceiver::resolve_dead_peers(const std::vector<std::pair<PeerId, Status>>& dead) {
  std::lock_guard lock(mutex_);
  for (const auto& [request_id, expectation] : expected_) {
    if (expectation->resolved()) continue;
    for (const auto& [peer, status] : dead) {
      if (expectation->peer != peer) continue;
      expectation->peer_failure = unavailable(request_label(request_id) + ": peer " + std::to_string(peer) +
                                              " died before completing the transfer (" + status.message() + ")");
    }
  }
  resolved_.notify_all();
}

// Expectations nobody waited for must not pile up.
void KvStreamReceiver::prune_lapsed() {
  const Deadline now = Clock::now();
  std::lock_guard lock(mutex_);
  std::erase_if(expected_, [&](const auto& entry) { return entry.second->deadline <= now; });
}

}  // namespace recgpt::kv
