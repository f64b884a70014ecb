// Layer-wise KV streaming over any TransferEngine: a prefill node pushes each layer's KV into the blocks a decode
// node reserved as soon as that layer is computed, then tells the decode node the request is complete (or
// aborted) with one notification. Before any write it says the stream started, so the receiver knows which peer
// writes it (and can tell a dead writer from a slow one). Backend-agnostic: only the TransferEngine face is used.
//
//   prefill (writer)                                decode (receiver)
//   writer = KvStreamWriter::create(...)            receiver.expect(request id, writer peer, deadline)
//   for each layer: compute; writer->write_layer(l) ...sends the reserved block ids to prefill...
//   writer->finish(deadline)  --- notification -->  receiver.wait(request id, deadline) -> completion
//
// The notification is delivered after the writes before it landed (the face's ordering), so a `completed`
// notification means the written layers are in the destination blocks.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "kv_transfer/kv_layout.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv {

// ---- Notification wire format ----------------------------------------------------------------------------------
//
// Version 1, every integer little-endian:
//   u32 magic "RKVS" (0x53564b52) | u8 version = 1 | u8 kind (1 completed, 2 aborted, 3 started) | u8 flags (bit 0: has
//   checksum; other bits 0) | u8 reserved = 0 | u16 request id bytes (1..kMaxRequestIdBytes) | request id |
//   u32 layer count (<= kMaxStreamLayers) | u32 layer index, strictly ascending, each <= INT32_MAX |
//   u64 checksum (only with flag bit 0)
// and nothing after. A receiver refuses other versions; a new field means a new version.

inline constexpr size_t kMaxRequestIdBytes = 256;
inline constexpr size_t kMaxStreamLayers = 4096;

// kStarted comes first, before any write, with no layers; then exactly one of kCompleted or kAborted.
enum class StreamEventKind : uint8_t { kCompleted = 1, kAborted = 2, kStarted = 3 };

struct StreamNotification {
  StreamEventKind kind = StreamEventKind::kCompleted;
  std::string request_id;
  std::vector<int32_t> layers;       // the layers written, ascending
  std::optional<uint64_t> checksum;  // kv_stream_checksum() of the written blocks, computed by the writer

  bool operator==(const StreamNotification&) const = default;
};

// kInvalidArgument for a request id empty or longer than kMaxRequestIdBytes, too many layers, layers not
// strictly ascending non-negative, or a `started` with layers or a checksum.
Result<Bytes> encode_stream_notification(const StreamNotification& notification);
// kInvalidArgument saying what is wrong for any bytes that are not exactly one valid version-1 message.
// Safe on arbitrary input.
Result<StreamNotification> decode_stream_notification(std::span<const std::byte> message);

// FNV-1a (64-bit) over, for each layer in `layers` and for K then V, the bytes of blocks[0], blocks[1], ... of
// that layer in the KV cache at host address `memory` laid out as `layout`, of the last block only its first
// `last_block_tokens` rows (0: all; as layer_copies moves them). Equal for a source and a destination holding the
// same bytes, whatever their block ids and strides. Debugging aid: it reads every byte on the CPU.
// Preconditions (checked, abort): `layout` valid, every block id and layer in range, last_block_tokens in
// [0, block_size].
uint64_t kv_stream_checksum(const std::byte* memory, const KvLayoutDescription& layout, std::span<const int32_t> blocks,
                            std::span<const int32_t> layers, int last_block_tokens = 0);

// Sends `started` for `request_id` to `peer`: the writer's own first notification, or (ahead of the writer) a
// node's word that it will write the stream. The handle of the send, or its error.
Result<std::unique_ptr<TransferHandle>> send_started(TransferEngine& engine, PeerId peer,
                                                     const std::string& request_id);
// Sends `aborted` (no layers) for `request_id` to `peer`, for a stream none of whose writes was ever issued: a node
// that announced the stream (send_started) and then gave the request up before writing ends it on the receiver.
Result<std::unique_ptr<TransferHandle>> send_unwritten_aborted(TransferEngine& engine, PeerId peer,
                                                               const std::string& request_id);

// ---- Writer (prefill side) -------------------------------------------------------------------------------------

struct KvStreamWriterConfig {
  PeerId peer = 0;                  // the decode node, connected on the writer's engine
  LocalRegionId source_region = 0;  // registered on the writer's engine; holds source_layout
  KvLayoutDescription source_layout;
  RemoteRegionId destination_region = 0;  // imported from `peer`; holds destination_layout
  KvLayoutDescription destination_layout;
  std::vector<int32_t> source_blocks;       // source_blocks[i] goes to destination_blocks[i]
  std::vector<int32_t> destination_blocks;  // no id twice
  std::string request_id;                   // 1..kMaxRequestIdBytes bytes
  // Token rows of the last block to write, 1..block_size (0: all): a prompt's partial last block moves only
  // the prompt's rows, so a late duplicate of the stream cannot overwrite rows the receiver has decoded into.
  int last_block_tokens = 0;
  // Debugging aid: when set, the host address of source_region's base; finish() hashes the written blocks
  // there (kv_stream_checksum) and sends the hash for the receiver to verify. Host memory only.
  const std::byte* checksum_source = nullptr;
};

// Pushes one request's KV to a peer, layer by layer. Thread-compatible: one thread uses a writer. The engine and
// the source memory must outlive it, and the source blocks must not change until finish() returns.
//
// Lifecycle: create -> write_layer()* -> finish() or abort(); the destructor aborts when neither ran.
class KvStreamWriter {
 public:
  // kInvalidArgument when the layouts differ (naming the field, from check_layouts_match), the block lists
  // differ in length, a block id is out of range, a destination block repeats, or the request id is empty or
  // too long. Sends `started` (not waited for here; a failure to send it poisons the writer like a failed write).
  static Result<std::unique_ptr<KvStreamWriter>> create(TransferEngine& engine, KvStreamWriterConfig config);

  KvStreamWriter(const KvStreamWriter&) = delete;
  KvStreamWriter& operator=(const KvStreamWriter&) = delete;
  ~KvStreamWriter();

  // Submits the writes of one layer (K and V of every mapped block). Layers may come in any order, each once:
  // kFailedPrecondition for a layer already written or after finish()/abort(); kInvalidArgument for a layer
  // out of range. A failed submission returns its error and poisons the writer: later write_layer() calls give
  // kFailedPrecondition, and finish() aborts and returns the first error.
  Status write_layer(int layer);

  // Waits (each until `deadline`) for every submitted layer to land, then sends `completed` (with the checksum
  // when configured) and waits for it to be sent. On any failure it cancels what is in flight, sends `aborted`
  // (best effort) and returns the error. kFailedPrecondition when called twice or after abort(). `give_up`
  // (optional) is asked every kGiveUpPoll while it waits: true ends the wait like a failure, with
  // kFailedPrecondition (the stream's caller went away; a peer that stopped reading must not hold the writer's
  // thread until the deadline).
  Status finish(Deadline deadline, const std::function<bool()>& give_up = nullptr);

  // Cancels the writes in flight and sends `aborted` (best effort, waiting at most kAbortNotifyTimeout for it
  // to be sent). No-op after finish() or abort(). The face drops a notification that follows a failed write, so
  // after one the receiver learns of the abort only from the peer's death or its own deadline.
  void abort();

  const std::string& request_id() const { return config_.request_id; }

  static constexpr std::chrono::milliseconds kAbortNotifyTimeout{1000};
  static constexpr std::chrono::milliseconds kGiveUpPoll{50};

 private:
  enum class State { kOpen, kFinished, kAborted };

  KvStreamWriter(TransferEngine& engine, KvStreamWriterConfig config);

  std::vector<int32_t> written_layers() const;
  void cancel_in_flight();
  void send_aborted(Deadline deadline);
  Status wait_and_notify_completed(Deadline deadline, const std::function<bool()>& give_up);

  TransferEngine& engine_;
  const KvStreamWriterConfig config_;
  State state_ = State::kOpen;
  Status failure_;                                                          // the first failed write_layer()
  std::vector<bool> layer_written_;                                         // [num_layers]
  std::unique_ptr<TransferHandle> started_;                                 // the `started` notification
  std::vector<std::pair<int, std::unique_ptr<TransferHandle>>> in_flight_;  // (layer, its writes)
};

// ---- Receiver (decode side) ------------------------------------------------------------------------------------

// Where the destination blocks are, for verifying a checksum the writer sent. Host memory only.
struct KvStreamDestination {
  const std::byte* memory = nullptr;  // host address of the destination region's base
  KvLayoutDescription layout;
  std::vector<int32_t> blocks;  // in the writer's order: destination_blocks of its config
  int last_block_tokens = 0;    // the writer's config's
};

struct KvStreamCompletion {
  std::vector<int32_t> layers;     // as the writer reported them, ascending; the caller decides if enough
  bool checksum_verified = false;  // a checksum came and matched the destination blocks
};

struct KvStreamReceiverCounters {
  uint64_t completed = 0;       // `completed` notifications matched to an expected request
  uint64_t aborted = 0;         // `aborted` notifications matched to an expected request
  uint64_t malformed = 0;       // notifications that did not decode; dropped
  uint64_t unexpected = 0;      // valid notifications for a request not expected, from another peer than the
                                // expected one, or after the request's first notification; dropped
  uint64_t receive_errors = 0;  // wait_notification() failures
};

// Owns the notification loop of one TransferEngine: a poller thread takes every notification of the engine (no
// one else may call wait_notification() on it while the receiver lives) and watches the peers of the requests
// expected. Thread-safe: any number of threads may expect, wait and forget concurrently. The engine must outlive
// the receiver; no wait() may be in progress when it is destroyed.
//
// Reusing blocks after wait() failed:
// - kUnavailable for `aborted`: safe. The writer cancelled its writes before sending it, and the notification
//   is delivered only after the writes submitted before it landed.
// - kUnavailable for a dead peer: safe with the local backend (a destroyed engine writes nothing). With one-sided
//   RDMA backends, only once the transport guarantees that the dead peer's queued writes can no longer land.
// - kDataLoss: safe. The writer sent `completed` after all its writes landed.
// - kDeadlineExceeded: NOT safe by itself. A live writer may still be writing (with the local backend, inside
//   its submit_writes()). The caller must first stop the writer through the control plane (cancel,
//   acknowledged) or see it dead. The face offers no way to fence a peer's writes.
class KvStreamReceiver {
 public:
  explicit KvStreamReceiver(TransferEngine& engine);
  KvStreamReceiver(const KvStreamReceiver&) = delete;
  KvStreamReceiver& operator=(const KvStreamReceiver&) = delete;
  ~KvStreamReceiver();

  // Registers that `peer` (a PeerId of this receiver's engine) will stream `request_id`. Call it before the
  // writer can notify: notifications for requests not expected are dropped. The expectation lapses at
  // `deadline` (forgotten; wait() never waits past it). With `destination`, a checksum the writer sends is
  // verified. kInvalidArgument for a bad request id or destination; kFailedPrecondition when the request is
  // already expected; the peer_status() error when the peer is not connected.
  Status expect(const std::string& request_id, PeerId peer, Deadline deadline,
                std::optional<KvStreamDestination> destination = std::nullopt);

  // Blocks until the request's notification came, its peer died, or min(deadline, the expectation's deadline).
  // The completion when `completed` arrived (and its checksum, if any and a destination was given, matched);
  // kDataLoss on a checksum mismatch or a layer outside the destination layout; kUnavailable when the writer
  // aborted or the peer died; kDeadlineExceeded at the deadline (the expectation stays until its own deadline,
  // so wait() may be called again); kNotFound for a request not expected (or already reported).
  // Every result but kDeadlineExceeded forgets the request.
  Result<KvStreamCompletion> wait(const std::string& request_id, Deadline deadline);

  // Drops the expectation (e.g. the request was cancelled); a later notification for it counts as unexpected.
  void forget(const std::string& request_id);

  KvStreamReceiverCounters counters() const;

  // How long the poller blocks in wait_notification(): the latency of noticing a dead peer and of destruction.
  static constexpr std::chrono::milliseconds kPollSlice{20};

 private:
  struct Expectation;

  void poll_loop();
  void check_peers();
  bool receive_one(Deadline deadline);
  void dispatch(const Notification& notification);
  void resolve_dead_peers(const std::vector<std::pair<PeerId, Status>>& dead);
  void prune_lapsed();
  void erase_if_same(const std::string& request_id, const std::shared_ptr<Expectation>& expectation);

  TransferEngine& engine_;
  mutable std::mutex mutex_;
  std::condition_variable resolved_;  // signalled when an expectation gets its outcome
  std::map<std::string, std::shared_ptr<Expectation>> expected_;
  KvStreamReceiverCounters counters_;
  bool stopping_ = false;
  std::thread poller_;  // last: starts after every other member exists
};

}  // namespace recgpt::kv
