// The ucx backend's staging of device regions through host memory, where its UCX has no CUDA transport (as
// Debian's has none): driven through the TransferEngine face with a stand-in copier whose "device" is host
// memory it knows, so the staging logic runs without a GPU (the real copier is checked on the GPU machine).
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kv_transfer/backends.h"
#include "kv_transfer/device_copy.h"
#include "tests/unit/kv_transfer/transfer_test_support.h"

namespace recgpt::kv {
namespace {

using std::chrono::milliseconds;
using testing::after;
using testing::as_bytes;
using testing::random_bytes;

constexpr milliseconds kWait(5000);
constexpr int kDevice = 3;

// Copies with memcpy, counting bytes each way; its "device memory" is the buffers it was told of, and it refuses
// (kInvalidArgument) any copy that reaches outside them. `fail_to_device` makes every copy to the device fail.
class StandInCopier final : public DeviceCopier {
 public:
  void add_device_buffer(std::vector<std::byte>& buffer) {
    std::lock_guard lock(mutex_);
    buffers_.emplace_back(buffer.data(), buffer.size());
  }

  Status check(const void* base, size_t bytes, int device) override { return inside(base, bytes, device); }
  Status to_host(void* host, const void* device_memory, size_t bytes, int device) override {
    RECGPT_RETURN_IF_ERROR(inside(device_memory, bytes, device));
    std::memcpy(host, device_memory, bytes);
    to_host_bytes += bytes;
    return Status::ok();
  }
  Status to_device(void* device_memory, const void* host, size_t bytes, int device) override {
    if (fail_to_device) return unavailable("the stand-in device failed");
    RECGPT_RETURN_IF_ERROR(inside(device_memory, bytes, device));
    std::memcpy(device_memory, host, bytes);
    to_device_bytes += bytes;
    return Status::ok();
  }

  std::atomic<uint64_t> to_host_bytes{0};
  std::atomic<uint64_t> to_device_bytes{0};
  std::atomic<bool> fail_to_device{false};

 private:
  Status inside(const void* pointer, size_t bytes, int device) {
    if (device != kDevice) return invalid_argument("not the stand-in device: " + std::to_string(device));
    const auto* start = static_cast<const std::byte*>(pointer);
    std::lock_guard lock(mutex_);
    for (auto [base, size] : buffers_) {
      if (start >= base && start + bytes <= base + size) return Status::ok();
    }
    return invalid_argument("not stand-in device memory");
  }

  std::mutex mutex_;
  std::vector<std::pair<const std::byte*, size_t>> buffers_;
};

std::unique_ptr<TransferEngine> make_engine(const std::string& name, const std::string& tls,
                                            std::shared_ptr<DeviceCopier> copier) {
  TransferEngineOptions options;
  options.name = name;
  options.settings = {{"tls", tls}};
  auto engine = create_ucx_transfer_engine(options, std::move(copier));
  if (!engine.is_ok()) {
    WARN("ucx transport '" << tls << "' is not available here: " << engine.status().to_string());
    return nullptr;
  }
  return std::move(engine).value();
}

MemoryRegion region_of(std::vector<std::byte>& buffer, bool on_device) {
  return {buffer.data(), buffer.size(), on_device ? MemoryKind::kCuda : MemoryKind::kHost, on_device ? kDevice : -1};
}

// A writer and a reader sharing one stand-in copier, the source of random bytes and the destination zeroed, each
// registered as device memory or not.
struct StagedPair {
  std::shared_ptr<StandInCopier> copier = std::make_shared<StandInCopier>();
  std::vector<std::byte> source;
  std::vector<std::byte> destination;
  std::unique_ptr<TransferEngine> writer;
  std::unique_ptr<TransferEngine> reader;
  LocalRegionId source_region = 0;
  PeerId peer = 0;
  RemoteRegionId remote_region = 0;
  bool ready = false;

  StagedPair(const std::string& tls, size_t bytes, bool source_on_device, bool destination_on_device)
      : source(random_bytes(bytes, 17)), destination(bytes) {
    copier->add_device_buffer(source);
    copier->add_device_buffer(destination);
    writer = make_engine("writer", tls, copier);
    reader = make_engine("reader", tls, copier);
    if (writer == nullptr || reader == nullptr) return;
    source_region = writer->register_memory(region_of(source, source_on_device)).value();
    const LocalRegionId destination_region =
        reader->register_memory(region_of(destination, destination_on_device)).value();
    auto connected = writer->connect(reader->local_endpoint().value(), after(kWait));
    if (!connected.is_ok()) {
      WARN("ucx transport '" << tls << "' cannot connect here: " << connected.status().to_string());
      return;
    }
    peer = *connected;
    remote_region = writer->import_region(peer, reader->export_region(destination_region).value()).value();
    ready = true;
  }
};

TEST_CASE("device regions UCX cannot reach are staged through host memory, and land before the notification",
          "[kv_transfer][ucx][staging]") {
  const std::string tls = GENERATE(as<std::string>{}, "tcp", "posix,cma,self");
  const auto [source_on_device, destination_on_device] =
      GENERATE(std::pair{true, false}, std::pair{false, true}, std::pair{true, true});
  INFO("tls=" << tls << " source on device " << source_on_device << ", destination " << destination_on_device);
  constexpr size_t kLargeBytes = 4 << 20;  // rendezvous on every transport
  constexpr size_t kBlockBytes = 16384;
  constexpr size_t kBlocks = 24;
  const size_t bytes = kLargeBytes + kBlocks * kBlockBytes + 5;
  StagedPair pair(tls, bytes, source_on_device, destination_on_device);
  if (!pair.ready) return;

  // One large write, permuted blocks after it, and a tiny tail (eager).
  std::vector<WriteOp> ops = {{pair.source_region, 0, pair.remote_region, 0, kLargeBytes}};
  const std::vector<size_t> order = testing::shuffled_block_order(kBlocks, 23);
  for (size_t block = 0; block < kBlocks; ++block) {
    ops.push_back({pair.source_region, kLargeBytes + block * kBlockBytes, pair.remote_region,
                   kLargeBytes + order[block] * kBlockBytes, kBlockBytes});
  }
  ops.push_back({pair.source_region, bytes - 5, pair.remote_region, bytes - 5, 5});
  auto writes = pair.writer->submit_writes(pair.peer, ops);
  REQUIRE(writes.is_ok());
  REQUIRE(pair.writer->notify(pair.peer, as_bytes("landed")).is_ok());
  auto received = pair.reader->wait_notification(after(kWait));
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  CHECK((*writes)->wait(after(kWait)).is_ok());

  // Every byte in place when the notification came: the large write and the tail where they were, the blocks
  // permuted.
  CHECK(std::memcmp(pair.destination.data(), pair.source.data(), kLargeBytes) == 0);
  CHECK(testing::permuted_blocks_landed(
      std::vector<std::byte>(pair.source.begin() + kLargeBytes, pair.source.end() - 5),
      std::vector<std::byte>(pair.destination.begin() + kLargeBytes, pair.destination.end() - 5), kBlockBytes, order));
  CHECK(std::memcmp(pair.destination.data() + bytes - 5, pair.source.data() + bytes - 5, 5) == 0);
  // Through the copier exactly where a side is on the device, once per byte.
  CHECK(pair.copier->to_host_bytes == (source_on_device ? bytes : 0));
  CHECK(pair.copier->to_device_bytes == (destination_on_device ? bytes : 0));
}

TEST_CASE("a lost copy into a staged region fails the receiver's notification wait", "[kv_transfer][ucx][staging]") {
  StagedPair pair("tcp", 65536, false, true);
  if (!pair.ready) return;
  pair.copier->fail_to_device = true;
  const std::vector<WriteOp> ops = {{pair.source_region, 0, pair.remote_region, 0, 65536}};
  REQUIRE(pair.writer->submit_writes(pair.peer, ops).is_ok());
  REQUIRE(pair.writer->notify(pair.peer, as_bytes("landed?")).is_ok());
  auto received = pair.reader->wait_notification(after(kWait));
  REQUIRE_FALSE(received.is_ok());
  CHECK(received.status().code() == StatusCode::kInternal);
  CHECK_THAT(received.status().message(), Catch::Contains("stand-in device failed"));
}

TEST_CASE("device memory is refused by name without a copier, or when the copier does not know it",
          "[kv_transfer][ucx][staging]") {
  std::vector<std::byte> buffer(4096);
  auto without = make_engine("without", "tcp", nullptr);
  if (without == nullptr) return;
  auto refused = without->register_memory(region_of(buffer, true));
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(refused.status().message(), Catch::Contains("no CUDA transport"));

  auto copier = std::make_shared<StandInCopier>();  // knows no buffer
  auto with = make_engine("with", "tcp", copier);
  REQUIRE(with != nullptr);
  CHECK(with->register_memory(region_of(buffer, true)).status().code() == StatusCode::kInvalidArgument);
  copier->add_device_buffer(buffer);
  CHECK(with->register_memory(region_of(buffer, true)).is_ok());
}

TEST_CASE("a staged region's key carries no rkey, a key whose flags do not fit its payload is refused",
          "[kv_transfer][ucx][staging]") {
  StagedPair pair("tcp", 4096, false, true);
  if (!pair.ready) return;
  // The reader's key of its staged destination, imported again as is: accepted.
  std::vector<std::byte> more(4096);
  pair.copier->add_device_buffer(more);
  const LocalRegionId staged = pair.reader->register_memory(region_of(more, true)).value();
  Bytes key = pair.reader->export_region(staged).value();
  CHECK(pair.writer->import_region(pair.peer, key).is_ok());
  // The same key with its staged flag cleared would claim an rkey it does not carry.
  constexpr size_t kFlagsOffset = 36;  // RegionKeyWire: magic, payload_bytes, uuid, base, bytes, region, flags
  REQUIRE(key.size() == kFlagsOffset + 4);
  std::memset(key.data() + kFlagsOffset, 0, 4);
  auto refused = pair.writer->import_region(pair.peer, key);
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recgpt::kv
