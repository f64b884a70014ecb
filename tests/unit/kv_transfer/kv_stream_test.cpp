// Layer-wise KV streaming (kv_transfer/kv_stream.h) over two `local` engines: a prefill engine writes, a decode
// engine receives.
#include "kv_transfer/kv_stream.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kv_transfer/transfer_engine.h"
#include "tests/unit/kv_transfer/transfer_test_support.h"

namespace recgpt::kv {
namespace {

using testing::after;
using testing::all_zero;
using testing::as_bytes;
using testing::random_bytes;

using std::chrono::milliseconds;

constexpr int kNumMapped = 20;  // blocks of a request

// bf16 KV of 4 layers, 512-byte blocks; `padding` bytes after each array so the two sides' strides differ.
KvLayoutDescription stream_layout(int64_t num_blocks, uint64_t padding) {
  KvLayoutDescription layout{4, 2, 16, 8, "bf16", num_blocks, 0};
  layout.array_stride_bytes = static_cast<uint64_t>(num_blocks) * layout.block_bytes() + padding;
  return layout;
}

std::unique_ptr<TransferEngine> make_engine(const std::string& name) {
  TransferEngineOptions options;
  options.name = name;
  auto engine = create_transfer_engine("local", options);
  REQUIRE(engine.is_ok());
  return std::move(engine).value();
}

// `count` distinct ids of [0, num_blocks) in random order, the first half sorted so that some runs coalesce.
std::vector<int32_t> random_blocks(int32_t num_blocks, int count, std::mt19937& random) {
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), random);
  ids.resize(count);
  std::sort(ids.begin(), ids.begin() + count / 2);
  return ids;
}

// A prefill engine connected to a decode engine that runs a receiver; random source KV, zeroed destination.
struct StreamPair {
  KvLayoutDescription source_layout = stream_layout(32, 0);
  KvLayoutDescription destination_layout = stream_layout(40, 256);
  std::vector<std::byte> source = std::vector<std::byte>(source_layout.region_bytes());
  std::vector<std::byte> destination = std::vector<std::byte>(destination_layout.region_bytes());
  std::unique_ptr<TransferEngine> prefill = make_engine("prefill");
  std::unique_ptr<TransferEngine> decode = make_engine("decode");
  std::unique_ptr<KvStreamReceiver> receiver = std::make_unique<KvStreamReceiver>(*decode);
  LocalRegionId source_region = 0;
  RemoteRegionId destination_region = 0;
  PeerId decode_at_prefill = 0;  // the writer's peer
  PeerId prefill_at_decode = 0;  // the receiver's peer
  std::vector<int32_t> source_blocks;
  std::vector<int32_t> destination_blocks;

  StreamPair() {
    std::mt19937 random(2024);
    for (std::byte& value : source) value = static_cast<std::byte>(random() & 0xff);
    source_blocks = random_blocks(32, kNumMapped, random);
    destination_blocks = random_blocks(40, kNumMapped, random);
    auto source_registered = prefill->register_memory({source.data(), source.size(), MemoryKind::kHost, -1});
    auto destination_registered =
        decode->register_memory({destination.data(), destination.size(), MemoryKind::kHost, -1});
    REQUIRE(source_registered.is_ok());
    REQUIRE(destination_registered.is_ok());
    source_region = *source_registered;
    auto decode_endpoint = decode->local_endpoint();
    auto prefill_endpoint = prefill->local_endpoint();
    REQUIRE(decode_endpoint.is_ok());
    REQUIRE(prefill_endpoint.is_ok());
    auto connected = prefill->connect(*decode_endpoint, after(milliseconds(1000)));
    auto connected_back = decode->connect(*prefill_endpoint, after(milliseconds(1000)));
    REQUIRE(connected.is_ok());
    REQUIRE(connected_back.is_ok());
    decode_at_prefill = *connected;
    prefill_at_decode = *connected_back;
    auto key = decode->export_region(*destination_registered);
    REQUIRE(key.is_ok());
    auto imported = prefill->import_region(decode_at_prefill, *key);
    REQUIRE(imported.is_ok());
    destination_region = *imported;
  }

  // The request moves mapped blocks [first, first + count).
  KvStreamWriterConfig config(const std::string& request_id, size_t first = 0, size_t count = kNumMapped) const {
    KvStreamWriterConfig config;
    config.peer = decode_at_prefill;
    config.source_region = source_region;
    config.source_layout = source_layout;
    config.destination_region = destination_region;
    config.destination_layout = destination_layout;
    config.source_blocks.assign(source_blocks.begin() + first, source_blocks.begin() + first + count);
    config.destination_blocks.assign(destination_blocks.begin() + first, destination_blocks.begin() + first + count);
    config.request_id = request_id;
    config.checksum_source = source.data();
    return config;
  }

  std::unique_ptr<KvStreamWriter> writer(const std::string& request_id, size_t first = 0,
                                         size_t count = kNumMapped) const {
    auto created = KvStreamWriter::create(*prefill, config(request_id, first, count));
    REQUIRE(created.is_ok());
    return std::move(created).value();
  }

  KvStreamDestination destination_view(size_t first = 0, size_t count = kNumMapped) const {
    return {destination.data(), destination_layout,
            std::vector<int32_t>(destination_blocks.begin() + first, destination_blocks.begin() + first + count)};
  }

  Status expect(const std::string& request_id, size_t first = 0, size_t count = kNumMapped) {
    return receiver->expect(request_id, prefill_at_decode, after(milliseconds(10000)), destination_view(first, count));
  }

  // Every byte of the destination as it must be after `layers` of all mapped blocks were written, computed from
  // the layout by hand (not through layer_copies), compared in full: mapped blocks and untouched bytes alike.
  bool destination_holds(const std::vector<int>& layers) const {
    std::vector<std::byte> expected(destination.size());
    const uint64_t block = source_layout.block_bytes();
    for (int layer : layers) {
      for (uint64_t array = 0; array < 2; ++array) {
        for (int i = 0; i < kNumMapped; ++i) {
          const uint64_t array_index = 2 * static_cast<uint64_t>(layer) + array;
          const uint64_t from = array_index * source_layout.array_stride_bytes + source_blocks[i] * block;
          const uint64_t to = array_index * destination_layout.array_stride_bytes + destination_blocks[i] * block;
          std::memcpy(expected.data() + to, source.data() + from, block);
        }
      }
    }
    return std::memcmp(expected.data(), destination.data(), destination.size()) == 0;
  }

  // The first byte of K of `layer` in mapped destination block `index`.
  std::byte& destination_byte(int layer, int index) {
    return destination[2 * static_cast<uint64_t>(layer) * destination_layout.array_stride_bytes +
                       destination_blocks[index] * destination_layout.block_bytes()];
  }
};

// Forwards everything to a real engine; the engines below change one part.
class ForwardingEngine : public TransferEngine {
 public:
  explicit ForwardingEngine(TransferEngine& inner) : inner_(inner) {}

  std::string_view backend_name() const override { return inner_.backend_name(); }
  Result<LocalRegionId> register_memory(const MemoryRegion& region) override { return inner_.register_memory(region); }
  Result<AllocatedRegion> allocate_memory(size_t bytes) override { return inner_.allocate_memory(bytes); }
  Status deregister_memory(LocalRegionId region) override { return inner_.deregister_memory(region); }
  Result<Bytes> export_region(LocalRegionId region) override { return inner_.export_region(region); }
  Result<Bytes> local_endpoint() override { return inner_.local_endpoint(); }
  Result<PeerId> connect(std::span<const std::byte> endpoint, Deadline deadline) override {
    return inner_.connect(endpoint, deadline);
  }
  Result<PeerId> watch(std::span<const std::byte> endpoint) override { return inner_.watch(endpoint); }
  Result<RemoteRegionId> import_region(PeerId peer, std::span<const std::byte> key) override {
    return inner_.import_region(peer, key);
  }
  void disconnect(PeerId peer) override { inner_.disconnect(peer); }
  Result<std::unique_ptr<TransferHandle>> submit_writes(PeerId peer, std::span<const WriteOp> ops) override {
    return inner_.submit_writes(peer, ops);
  }
  Result<std::unique_ptr<TransferHandle>> notify(PeerId peer, std::span<const std::byte> message) override {
    return inner_.notify(peer, message);
  }
  Result<std::optional<Notification>> wait_notification(Deadline deadline) override {
    return inner_.wait_notification(deadline);
  }
  Status peer_status(PeerId peer) override { return inner_.peer_status(peer); }

 protected:
  TransferEngine& inner_;
};

// Withholds the notifications until peer_status() first reports a dead peer: the receiver then sees a peer's
// death while that peer's last notification still waits in the engine.
class WithholdingEngine final : public ForwardingEngine {
 public:
  using ForwardingEngine::ForwardingEngine;
  Result<std::optional<Notification>> wait_notification(Deadline deadline) override {
    if (!withholding_) return inner_.wait_notification(deadline);
    std::this_thread::sleep_until(deadline);
    return std::optional<Notification>();
  }
  Status peer_status(PeerId peer) override {
    Status status = inner_.peer_status(peer);
    if (!status.is_ok()) withholding_ = false;
    return status;
  }

 private:
  std::atomic<bool> withholding_{true};
};

// A batch that stays in flight until cancelled: writes to a peer that stopped reading.
class StalledHandle final : public TransferHandle {
 public:
  TransferState poll() override { return cancelled_ ? TransferState::kFailed : TransferState::kPending; }
  Status wait(Deadline deadline) override {
    std::this_thread::sleep_until(std::min(deadline, Clock::now() + milliseconds(10)));
    return cancelled_ ? status() : deadline_exceeded("stalled");
  }
  void cancel() override { cancelled_ = true; }
  Status status() override { return cancelled_ ? unavailable("cancelled") : Status::ok(); }

 private:
  std::atomic<bool> cancelled_{false};
};

// Its writes never land (notifications go through).
class StallingEngine final : public ForwardingEngine {
 public:
  using ForwardingEngine::ForwardingEngine;
  Result<std::unique_ptr<TransferHandle>> submit_writes(PeerId, std::span<const WriteOp>) override {
    return std::unique_ptr<TransferHandle>(std::make_unique<StalledHandle>());
  }
};

// Appends rather than "r" + std::to_string(): GCC 12 misreports the latter under -Wrestrict.
std::string request_name(size_t index) {
  std::string name = "r";
  name += std::to_string(index);
  return name;
}

StreamNotification sample_notification() {
  return {StreamEventKind::kCompleted, "request-42", {0, 1, 3}, 0x0123456789abcdefULL};
}

}  // namespace

TEST_CASE("a stream notification decodes to what was encoded", "[kv_transfer][stream]") {
  for (const StreamNotification& original :
       {sample_notification(), StreamNotification{StreamEventKind::kAborted, std::string(256, 'x'), {}, {}}}) {
    auto encoded = encode_stream_notification(original);
    REQUIRE(encoded.is_ok());
    auto decoded = decode_stream_notification(*encoded);
    REQUIRE(decoded.is_ok());
    CHECK(decoded.value() == original);
  }
}

TEST_CASE("a stream notification that cannot be encoded is refused", "[kv_transfer][stream]") {
  StreamNotification notification = sample_notification();
  SECTION("empty request id") { notification.request_id.clear(); }
  SECTION("request id over 256 bytes") { notification.request_id = std::string(257, 'x'); }
  SECTION("layers not ascending") { notification.layers = {2, 1}; }
  SECTION("negative layer") { notification.layers = {-1}; }
  SECTION("too many layers") {
    notification.layers.resize(kMaxStreamLayers + 1);
    std::iota(notification.layers.begin(), notification.layers.end(), 0);
  }
  CHECK(encode_stream_notification(notification).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("every truncation of a stream notification is refused", "[kv_transfer][stream]") {
  const Bytes valid = encode_stream_notification(sample_notification()).value();
  for (size_t length = 0; length < valid.size(); ++length) {
    auto decoded = decode_stream_notification(std::span<const std::byte>(valid.data(), length));
    REQUIRE(decoded.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(decoded.status().message(), Catch::Contains("truncated"));
  }
  Bytes longer = valid;
  longer.push_back(std::byte{0});
  CHECK_THAT(decode_stream_notification(longer).status().message(), Catch::Contains("trailing"));
}

TEST_CASE("a stream notification with a bad field is refused naming it", "[kv_transfer][stream]") {
  const Bytes valid = encode_stream_notification(sample_notification()).value();
  // Offsets in version 1: magic 0-3, version 4, kind 5, flags 6, reserved 7, id length 8-9, id 10-19, layer count
  // 20-23, layers 24-35, checksum 36-43.
  struct Corruption {
    size_t offset;
    uint8_t value;
    const char* expected;
  };
  const Corruption corruptions[] = {
      {0, 'X', "magic"},
      {4, 2, "version 2"},
      {5, 4, "kind 4"},
      {5, 3, "started notification carries no layers"},
      {6, 0x81, "flags"},
      {7, 1, "reserved"},
      {8, 0, "request id length 0"},
      {9, 1, "request id length 266"},
      {22, 1, "layer count 65539"},
      {28, 0, "layer 0 at index 1"},
  };
  for (const Corruption& corruption : corruptions) {
    Bytes message = valid;
    message[corruption.offset] = static_cast<std::byte>(corruption.value);
    auto decoded = decode_stream_notification(message);
    INFO("byte " << corruption.offset);
    REQUIRE(decoded.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(decoded.status().message(), Catch::Contains(corruption.expected));
  }
}

TEST_CASE("random bytes and mutated notifications never crash the decoder", "[kv_transfer][stream]") {
  std::mt19937 random(99);
  const Bytes valid = encode_stream_notification(sample_notification()).value();
  for (int trial = 0; trial < 5000; ++trial) {
    Bytes message;
    if (trial % 2 == 0) {
      message.resize(random() % 80);
      for (std::byte& value : message) value = static_cast<std::byte>(random() & 0xff);
    } else {
      message = valid;
      for (int flips = 0; flips < 3; ++flips) message[random() % message.size()] = static_cast<std::byte>(random());
    }
    auto decoded = decode_stream_notification(message);
    REQUIRE((decoded.is_ok() || decoded.status().code() == StatusCode::kInvalidArgument));
  }
}

TEST_CASE("a writer streams layers in any order and the receiver sees exactly the mapped blocks",
          "[kv_transfer][stream]") {
  StreamPair pair;
  REQUIRE(pair.expect("r1").is_ok());
  auto writer = pair.writer("r1");
  std::vector<int> layers;
  SECTION("all four layers") { layers = {2, 0, 3, 1}; }
  SECTION("three of four layers") { layers = {2, 0, 1}; }
  for (int layer : layers) REQUIRE(writer->write_layer(layer).is_ok());
  REQUIRE(writer->finish(after(milliseconds(5000))).is_ok());

  auto completion = pair.receiver->wait("r1", after(milliseconds(5000)));
  REQUIRE(completion.is_ok());
  std::sort(layers.begin(), layers.end());
  CHECK(completion->layers == std::vector<int32_t>(layers.begin(), layers.end()));
  CHECK(completion->checksum_verified);
  CHECK(pair.destination_holds(layers));
  CHECK(pair.receiver->counters().completed == 1);
  CHECK(pair.receiver->wait("r1", after(milliseconds(10))).status().code() == StatusCode::kNotFound);
}

TEST_CASE("a partial last block moves only its first rows and leaves the receiver's later rows alone",
          "[kv_transfer][stream]") {
  StreamPair pair;
  std::fill(pair.destination.begin(), pair.destination.end(), std::byte{0xab});  // rows the receiver decoded into
  constexpr int kLastBlockTokens = 3;                                            // of 8
  KvStreamWriterConfig config = pair.config("r1");
  config.last_block_tokens = kLastBlockTokens;
  KvStreamDestination destination = pair.destination_view();
  destination.last_block_tokens = kLastBlockTokens;
  REQUIRE(pair.receiver->expect("r1", pair.prefill_at_decode, after(milliseconds(10000)), destination).is_ok());
  auto writer = KvStreamWriter::create(*pair.prefill, config);
  REQUIRE(writer.is_ok());
  for (int layer = 0; layer < 4; ++layer) REQUIRE((*writer)->write_layer(layer).is_ok());
  REQUIRE((*writer)->finish(after(milliseconds(5000))).is_ok());
  auto completion = pair.receiver->wait("r1", after(milliseconds(5000)));
  REQUIRE(completion.is_ok());
  CHECK(completion->checksum_verified);

  const uint64_t block = pair.source_layout.block_bytes();
  const uint64_t moved = block / 8 * kLastBlockTokens;
  for (uint64_t array = 0; array < 8; ++array) {  // K and V of 4 layers
    for (int i = 0; i < kNumMapped; ++i) {
      const std::byte* from =
          pair.source.data() + array * pair.source_layout.array_stride_bytes + pair.source_blocks[i] * block;
      const std::byte* to = pair.destination.data() + array * pair.destination_layout.array_stride_bytes +
                            pair.destination_blocks[i] * block;
      const bool last = i + 1 == kNumMapped;
      REQUIRE(std::memcmp(from, to, last ? moved : block) == 0);
      if (last) REQUIRE(std::all_of(to + moved, to + block, [](std::byte b) { return b == std::byte{0xab}; }));
    }
  }
  destination.last_block_tokens = 9;
  CHECK(pair.receiver->expect("r2", pair.prefill_at_decode, after(milliseconds(1000)), destination).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("a destination corrupted after the writes landed fails its checksum", "[kv_transfer][stream]") {
  StreamPair pair;
  REQUIRE(pair.expect("r1").is_ok());
  auto writer = pair.writer("r1");
  for (int layer = 0; layer < 4; ++layer) REQUIRE(writer->write_layer(layer).is_ok());
  REQUIRE(writer->finish(after(milliseconds(5000))).is_ok());
  pair.destination_byte(1, kNumMapped - 1) ^= std::byte{0x01};
  auto completion = pair.receiver->wait("r1", after(milliseconds(5000)));
  CHECK(completion.status().code() == StatusCode::kDataLoss);
  CHECK_THAT(completion.status().message(), Catch::Contains("checksum"));
}

TEST_CASE("a completion is not verified without a checksum or a destination", "[kv_transfer][stream]") {
  StreamPair pair;
  KvStreamWriterConfig config = pair.config("r1");
  SECTION("writer sends no checksum") {
    config.checksum_source = nullptr;
    REQUIRE(pair.expect("r1").is_ok());
  }
  SECTION("receiver has no destination") {
    REQUIRE(pair.receiver->expect("r1", pair.prefill_at_decode, after(milliseconds(10000))).is_ok());
  }
  auto writer = KvStreamWriter::create(*pair.prefill, config);
  REQUIRE(writer.is_ok());
  REQUIRE((*writer)->write_layer(0).is_ok());
  REQUIRE((*writer)->finish(after(milliseconds(5000))).is_ok());
  auto completion = pair.receiver->wait("r1", after(milliseconds(5000)));
  REQUIRE(completion.is_ok());
  CHECK_FALSE(completion->checksum_verified);
}

TEST_CASE("a layer written twice, out of range or after finish is refused", "[kv_transfer][stream]") {
  StreamPair pair;
  auto writer = pair.writer("r1");
  REQUIRE(writer->write_layer(1).is_ok());
  Status twice = writer->write_layer(1);
  CHECK(twice.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(twice.message(), Catch::Contains("already written"));
  CHECK(writer->write_layer(4).code() == StatusCode::kInvalidArgument);
  CHECK(writer->write_layer(-1).code() == StatusCode::kInvalidArgument);
  REQUIRE(writer->finish(after(milliseconds(5000))).is_ok());
  CHECK(writer->write_layer(2).code() == StatusCode::kFailedPrecondition);
  CHECK(writer->finish(after(milliseconds(5000))).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("a writer with mismatched layouts or bad block lists is refused at create", "[kv_transfer][stream]") {
  StreamPair pair;
  KvStreamWriterConfig config = pair.config("r1");
  std::string expected;
  SECTION("dtype") {
    config.destination_layout.dtype = "f16";
    expected = "differ in dtype: bf16 here, f16";
  }
  SECTION("block size") {
    config.destination_layout.block_size = 16;
    expected = "differ in block_size";
  }
  SECTION("lists of different lengths") {
    config.destination_blocks.pop_back();
    expected = "differ in length";
  }
  SECTION("source id out of range") {
    config.source_blocks[3] = 32;
    expected = "source block id 32";
  }
  SECTION("destination id out of range") {
    config.destination_blocks[0] = -1;
    expected = "destination block id -1";
  }
  SECTION("destination id twice") {
    config.destination_blocks[1] = config.destination_blocks[0];
    expected = "appears twice";
  }
  SECTION("empty request id") {
    config.request_id.clear();
    expected = "request id";
  }
  SECTION("request id too long") {
    config.request_id = std::string(300, 'r');
    expected = "request id";
  }
  auto writer = KvStreamWriter::create(*pair.prefill, config);
  REQUIRE(writer.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(writer.status().message(), Catch::Contains(expected));
}

TEST_CASE("a writer dropped without finish makes the wait fail as aborted, not at its deadline",
          "[kv_transfer][stream]") {
  StreamPair pair;
  REQUIRE(pair.expect("r1").is_ok());
  auto writer = pair.writer("r1");
  REQUIRE(writer->write_layer(0).is_ok());
  SECTION("destroyed") { writer.reset(); }
  SECTION("aborted") {
    writer->abort();
    CHECK(writer->finish(after(milliseconds(1000))).code() == StatusCode::kFailedPrecondition);
  }
  auto completion = pair.receiver->wait("r1", after(milliseconds(10000)));
  CHECK(completion.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(completion.status().message(), Catch::Contains("aborted"));
  CHECK(pair.receiver->counters().aborted == 1);
}

TEST_CASE("a writer whose writes do not land stops waiting when its caller gives up, and aborts the stream",
          "[kv_transfer][stream]") {
  StreamPair pair;
  StallingEngine stalling(*pair.prefill);
  REQUIRE(pair.expect("r1").is_ok());
  auto created = KvStreamWriter::create(stalling, pair.config("r1"));
  REQUIRE(created.is_ok());
  KvStreamWriter& writer = **created;
  for (int layer = 0; layer < 4; ++layer) REQUIRE(writer.write_layer(layer).is_ok());
  std::atomic<bool> gone{false};
  std::thread caller([&gone] {
    std::this_thread::sleep_for(milliseconds(200));
    gone = true;
  });
  const auto start = Clock::now();
  const Status finished = writer.finish(after(milliseconds(30000)), [&gone] { return gone.load(); });
  caller.join();
  CHECK(finished.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(finished.message(), Catch::Contains("gave up"));
  CHECK(Clock::now() - start < milliseconds(15000));  // long before the finish's deadline
  auto completion = pair.receiver->wait("r1", after(milliseconds(5000)));
  CHECK(completion.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(completion.status().message(), Catch::Contains("aborted"));
}

TEST_CASE("a dead writer engine makes the wait fail with kUnavailable before its deadline", "[kv_transfer][stream]") {
  StreamPair pair;
  REQUIRE(pair.expect("r1").is_ok());
  auto writer = pair.writer("r1");
  REQUIRE(writer->write_layer(0).is_ok());
  pair.prefill->disconnect(pair.decode_at_prefill);  // the `aborted` notification cannot leave...
  writer.reset();
  pair.prefill.reset();  // ...and the process dies
  auto completion = pair.receiver->wait("r1", after(milliseconds(2000)));
  CHECK(completion.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(completion.status().message(), Catch::Contains("died"));
  CHECK(pair.receiver->counters().aborted == 0);
}

TEST_CASE("a completion sent just before the writer engine died still counts", "[kv_transfer][stream]") {
  StreamPair pair;
  pair.receiver.reset();
  WithholdingEngine withholding(*pair.decode);
  KvStreamReceiver receiver(withholding);
  REQUIRE(receiver.expect("r1", pair.prefill_at_decode, after(milliseconds(10000)), pair.destination_view()).is_ok());
  auto writer = pair.writer("r1");
  for (int layer = 0; layer < 4; ++layer) REQUIRE(writer->write_layer(layer).is_ok());
  REQUIRE(writer->finish(after(milliseconds(5000))).is_ok());
  writer.reset();
  pair.prefill.reset();  // the receiver learns of the death with `completed` still waiting in its engine
  auto completion = receiver.wait("r1", after(milliseconds(5000)));
  REQUIRE(completion.is_ok());
  CHECK(completion->checksum_verified);
}

TEST_CASE("a write to a dead receiver fails and finish reports it", "[kv_transfer][stream]") {
  StreamPair pair;
  auto writer = pair.writer("r1");
  SECTION("before the write") {
    pair.receiver.reset();
    pair.decode.reset();
    CHECK(writer->write_layer(0).code() == StatusCode::kUnavailable);
    CHECK(writer->write_layer(1).code() == StatusCode::kFailedPrecondition);
  }
  SECTION("before finish") {
    REQUIRE(writer->write_layer(0).is_ok());
    pair.receiver.reset();
    pair.decode.reset();
  }
  CHECK(writer->finish(after(milliseconds(1000))).code() == StatusCode::kUnavailable);
}

TEST_CASE("without a notification the wait ends at its deadline", "[kv_transfer][stream]") {
  StreamPair pair;
  SECTION("the wait's deadline: the request stays expected") {
    REQUIRE(pair.receiver->expect("r1", pair.prefill_at_decode, after(milliseconds(10000))).is_ok());
    CHECK(pair.receiver->wait("r1", after(milliseconds(50))).status().code() == StatusCode::kDeadlineExceeded);
    CHECK(pair.receiver->wait("r1", after(milliseconds(10))).status().code() == StatusCode::kDeadlineExceeded);
    pair.receiver->forget("r1");
    CHECK(pair.receiver->wait("r1", after(milliseconds(10))).status().code() == StatusCode::kNotFound);
  }
  SECTION("the expectation's deadline: the request is forgotten") {
    REQUIRE(pair.receiver->expect("r1", pair.prefill_at_decode, after(milliseconds(500))).is_ok());
    CHECK(pair.receiver->wait("r1", after(milliseconds(60000))).status().code() == StatusCode::kDeadlineExceeded);
    CHECK(pair.receiver->wait("r1", after(milliseconds(10))).status().code() == StatusCode::kNotFound);
  }
}

TEST_CASE("expect refuses duplicates, unknown peers and bad destinations", "[kv_transfer][stream]") {
  StreamPair pair;
  REQUIRE(pair.expect("r1").is_ok());
  CHECK(pair.expect("r1").code() == StatusCode::kFailedPrecondition);
  CHECK_FALSE(pair.receiver->expect("r2", pair.prefill_at_decode + 100, after(milliseconds(1000))).is_ok());
  KvStreamDestination bad = pair.destination_view();
  bad.blocks[0] = 40;
  CHECK(pair.receiver->expect("r3", pair.prefill_at_decode, after(milliseconds(1000)), bad).code() ==
        StatusCode::kInvalidArgument);
  CHECK(pair.receiver->expect("", pair.prefill_at_decode, after(milliseconds(1000))).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("garbage and stray notifications are counted and ignored", "[kv_transfer][stream]") {
  StreamPair pair;
  REQUIRE(pair.expect("r1").is_ok());
  Bytes truncated = encode_stream_notification(sample_notification()).value();
  truncated.pop_back();
  for (const Bytes& garbage : {Bytes{}, as_bytes("hello"), truncated, Bytes(64, std::byte{0xff})}) {
    REQUIRE(pair.prefill->notify(pair.decode_at_prefill, garbage).is_ok());
  }
  // A valid `completed` for a request nobody expects, and one for r1 from an engine that is not its writer.
  StreamNotification stray{StreamEventKind::kCompleted, "nobody", {0}, std::nullopt};
  REQUIRE(pair.prefill->notify(pair.decode_at_prefill, encode_stream_notification(stray).value()).is_ok());
  auto impostor = make_engine("impostor");
  auto decode_endpoint = pair.decode->local_endpoint();
  REQUIRE(decode_endpoint.is_ok());
  auto impostor_peer = impostor->connect(*decode_endpoint, after(milliseconds(1000)));
  REQUIRE(impostor_peer.is_ok());
  stray.request_id = "r1";
  REQUIRE(impostor->notify(*impostor_peer, encode_stream_notification(stray).value()).is_ok());

  auto writer = pair.writer("r1");
  for (int layer = 0; layer < 4; ++layer) REQUIRE(writer->write_layer(layer).is_ok());
  REQUIRE(writer->finish(after(milliseconds(5000))).is_ok());
  auto completion = pair.receiver->wait("r1", after(milliseconds(5000)));
  REQUIRE(completion.is_ok());  // notifications are taken in order: every stray one was counted before
  CHECK(completion->checksum_verified);
  const KvStreamReceiverCounters counters = pair.receiver->counters();
  CHECK(counters.malformed == 4);
  CHECK(counters.unexpected == 2);
  CHECK(counters.completed == 1);
}

// Catch2 assertions are not thread-safe: each thread stores its result in its own slot, checked after join.
TEST_CASE("four threads wait on four requests concurrently", "[kv_transfer][stream]") {
  StreamPair pair;
  constexpr size_t kNumRequests = 4;
  constexpr size_t kBlocksPerRequest = kNumMapped / kNumRequests;
  for (size_t request = 0; request < kNumRequests; ++request) {
    REQUIRE(pair.expect(request_name(request), request * kBlocksPerRequest, kBlocksPerRequest).is_ok());
  }
  std::array<Status, kNumRequests> results;
  std::vector<std::thread> waiters;
  waiters.reserve(kNumRequests);
  for (size_t request = 0; request < kNumRequests; ++request) {
    waiters.emplace_back([&, request] {
      auto completion = pair.receiver->wait(request_name(request), after(milliseconds(10000)));
      results[request] = completion.is_ok() && !completion->checksum_verified ? internal_error("checksum not verified")
                                                                              : completion.status();
    });
  }
  bool written = true;  // no REQUIRE while the waiters run: a throw would skip their join
  for (size_t request = kNumRequests; request-- > 0;) {
    auto writer = KvStreamWriter::create(
        *pair.prefill, pair.config(request_name(request), request * kBlocksPerRequest, kBlocksPerRequest));
    written = written && writer.is_ok();
    for (int layer = 0; written && layer < 4; ++layer) written = (*writer)->write_layer(layer).is_ok();
    written = written && (*writer)->finish(after(milliseconds(5000))).is_ok();
  }
  for (std::thread& waiter : waiters) waiter.join();
  CHECK(written);
  for (const Status& result : results) CHECK(result.to_string() == Status::ok().to_string());
  CHECK(pair.destination_holds({0, 1, 2, 3}));
  CHECK(pair.receiver->counters().completed == kNumRequests);
}

}  // namespace recgpt::kv
