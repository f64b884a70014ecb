// The `local` transfer backend, driven only through the TransferEngine face.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <latch>
#include <limits>
#include <numeric>
#include <random>
#include <set>
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

constexpr size_t kBlockBytes = 4096;
constexpr size_t kNumBlocks = 64;
constexpr size_t kBufferBytes = kBlockBytes * kNumBlocks;

std::unique_ptr<TransferEngine> make_engine(const std::string& name) {
  TransferEngineOptions options;
  options.name = name;
  auto engine = create_transfer_engine("local", options);
  REQUIRE(engine.is_ok());
  return std::move(engine).value();
}

LocalRegionId register_host(TransferEngine& engine, std::vector<std::byte>& buffer) {
  auto region = engine.register_memory({buffer.data(), buffer.size(), MemoryKind::kHost, -1});
  REQUIRE(region.is_ok());
  return *region;
}

// A writer connected to a reader, with a source buffer of random bytes and a zeroed destination imported.
struct ConnectedPair {
  std::vector<std::byte> source = random_bytes(kBufferBytes, 7);
  std::vector<std::byte> destination = std::vector<std::byte>(kBufferBytes);
  std::unique_ptr<TransferEngine> writer = make_engine("writer");
  std::unique_ptr<TransferEngine> reader = make_engine("reader");
  LocalRegionId source_region = register_host(*writer, source);
  LocalRegionId destination_region = register_host(*reader, destination);
  PeerId peer = 0;
  RemoteRegionId remote_region = 0;

  ConnectedPair() {
    auto endpoint = reader->local_endpoint();
    REQUIRE(endpoint.is_ok());
    auto connected = writer->connect(*endpoint, after(milliseconds(1000)));
    REQUIRE(connected.is_ok());
    peer = *connected;
    auto key = reader->export_region(destination_region);
    REQUIRE(key.is_ok());
    auto imported = writer->import_region(peer, *key);
    REQUIRE(imported.is_ok());
    remote_region = *imported;
  }

  WriteOp block_op(size_t source_block, size_t destination_block) const {
    return {source_region, source_block * kBlockBytes, remote_region, destination_block * kBlockBytes, kBlockBytes};
  }

  std::vector<WriteOp> block_ops(const std::vector<size_t>& permutation) const {
    return testing::permuted_block_ops(source_region, remote_region, kBlockBytes, permutation);
  }

  bool destination_holds(const std::vector<size_t>& permutation) const {
    return testing::permuted_blocks_landed(source, destination, kBlockBytes, permutation);
  }
};

std::vector<size_t> shuffled_blocks(uint32_t seed) { return testing::shuffled_block_order(kNumBlocks, seed); }

TEST_CASE("local engines write permuted blocks and the notification arrives after them", "[kv_transfer][local]") {
  ConnectedPair pair;
  CHECK(pair.writer->backend_name() == "local");
  const std::vector<size_t> permutation = shuffled_blocks(1234);
  const std::vector<WriteOp> ops = pair.block_ops(permutation);

  auto writes = pair.writer->submit_writes(pair.peer, ops);
  REQUIRE(writes.is_ok());
  CHECK((*writes)->wait(after(milliseconds(1000))).is_ok());
  CHECK((*writes)->poll() == TransferState::kDone);
  CHECK((*writes)->status().is_ok());
  auto sent = pair.writer->notify(pair.peer, as_bytes("request-17"));
  REQUIRE(sent.is_ok());
  CHECK((*sent)->wait(after(milliseconds(1000))).is_ok());

  auto received = pair.reader->wait_notification(after(milliseconds(1000)));
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  CHECK((*received)->message == as_bytes("request-17"));
  CHECK(pair.destination_holds(permutation));
}

TEST_CASE("a notification names its sender by a peer id the receiver can use", "[kv_transfer][local]") {
  ConnectedPair pair;
  REQUIRE(pair.writer->notify(pair.peer, as_bytes("hello")).is_ok());
  auto received = pair.reader->wait_notification(after(milliseconds(1000)));
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  const PeerId sender = (*received)->peer;
  CHECK(pair.reader->peer_status(sender).is_ok());

  // The same sender gets the same id on the next message.
  REQUIRE(pair.writer->notify(pair.peer, as_bytes("again")).is_ok());
  auto second = pair.reader->wait_notification(after(milliseconds(1000)));
  REQUIRE(second.is_ok());
  REQUIRE(second->has_value());
  CHECK((*second)->peer == sender);

  pair.writer.reset();
  CHECK(pair.reader->peer_status(sender).code() == StatusCode::kUnavailable);
}

TEST_CASE("an out-of-bounds op is refused by name and nothing is written", "[kv_transfer][local]") {
  ConnectedPair pair;
  std::vector<WriteOp> ops = {pair.block_op(0, 0), pair.block_op(1, 1), pair.block_op(2, 2)};

  SECTION("remote range past the end of the region") { ops[2].remote_offset = kBufferBytes - 100; }
  SECTION("remote offset so large that offset + length overflows") {
    ops[2].remote_offset = std::numeric_limits<uint64_t>::max() - 10;
  }
  SECTION("local range past the end of the region") { ops[2].local_offset = kBufferBytes - kBlockBytes + 1; }
  SECTION("length larger than both regions") { ops[2].length = kBufferBytes + 1; }
  SECTION("unknown local region") { ops[2].local_region = pair.source_region + 100; }
  SECTION("remote region never imported") { ops[2].remote_region = pair.remote_region + 100; }

  auto writes = pair.writer->submit_writes(pair.peer, ops);
  REQUIRE_FALSE(writes.is_ok());
  CHECK(writes.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(writes.status().message(), Catch::Contains("op 2"));
  CHECK(all_zero(pair.destination));
}

TEST_CASE("writes into a region the peer deregistered are refused", "[kv_transfer][local]") {
  ConnectedPair pair;
  REQUIRE(pair.reader->deregister_memory(pair.destination_region).is_ok());
  const std::vector<WriteOp> ops = {pair.block_op(0, 0)};
  auto writes = pair.writer->submit_writes(pair.peer, ops);
  REQUIRE_FALSE(writes.is_ok());
  CHECK(writes.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(writes.status().message(), Catch::Contains("op 0"));
  CHECK(all_zero(pair.destination));
}

TEST_CASE("garbage endpoint and region key bytes are refused", "[kv_transfer][local]") {
  ConnectedPair pair;
  const Bytes short_garbage = as_bytes("xyz");
  const Bytes zeros(64);
  auto key = pair.reader->export_region(pair.destination_region);
  REQUIRE(key.is_ok());
  auto endpoint = pair.reader->local_endpoint();
  REQUIRE(endpoint.is_ok());

  for (const Bytes& bad_endpoint : {short_garbage, zeros, Bytes(endpoint->size()), key.value()}) {
    auto connected = pair.writer->connect(bad_endpoint, after(milliseconds(100)));
    REQUIRE_FALSE(connected.is_ok());
    CHECK(connected.status().code() == StatusCode::kInvalidArgument);
  }
  for (const Bytes& bad_key : {short_garbage, zeros, Bytes(key->size()), endpoint.value()}) {
    auto imported = pair.writer->import_region(pair.peer, bad_key);
    REQUIRE_FALSE(imported.is_ok());
    CHECK(imported.status().code() == StatusCode::kInvalidArgument);
  }

  SECTION("a key exported by another engine than the peer") {
    auto other = make_engine("other");
    std::vector<std::byte> other_buffer(kBlockBytes);
    auto other_key = other->export_region(register_host(*other, other_buffer));
    REQUIRE(other_key.is_ok());
    auto imported = pair.writer->import_region(pair.peer, *other_key);
    REQUIRE_FALSE(imported.is_ok());
    CHECK(imported.status().code() == StatusCode::kInvalidArgument);
  }
  SECTION("a key of a region the peer deregistered") {
    REQUIRE(pair.reader->deregister_memory(pair.destination_region).is_ok());
    auto imported = pair.writer->import_region(pair.peer, *key);
    REQUIRE_FALSE(imported.is_ok());
    CHECK(imported.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("register_memory refuses CUDA, null and empty regions", "[kv_transfer][local]") {
  auto engine = make_engine("host-only");
  std::vector<std::byte> buffer(kBlockBytes);

  auto cuda = engine->register_memory({buffer.data(), buffer.size(), MemoryKind::kCuda, 0});
  REQUIRE_FALSE(cuda.is_ok());
  CHECK(cuda.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(cuda.status().message(), Catch::Contains("kCuda"));

  auto null_base = engine->register_memory({nullptr, buffer.size(), MemoryKind::kHost, -1});
  CHECK(null_base.status().code() == StatusCode::kInvalidArgument);
  auto empty = engine->register_memory({buffer.data(), 0, MemoryKind::kHost, -1});
  CHECK(empty.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("an unknown backend name gives kNotFound listing local", "[kv_transfer][local]") {
  auto engine = create_transfer_engine("carrier-pigeon", TransferEngineOptions{});
  REQUIRE_FALSE(engine.is_ok());
  CHECK(engine.status().code() == StatusCode::kNotFound);
  CHECK_THAT(engine.status().message(), Catch::Contains("local"));
  const std::vector<std::string> backends = transfer_backends();
  CHECK(std::find(backends.begin(), backends.end(), "local") != backends.end());
}

TEST_CASE("the local backend refuses settings it does not know", "[kv_transfer][local]") {
  TransferEngineOptions options;
  options.settings = {{"tls", "tcp"}};
  auto engine = create_transfer_engine("local", options);
  REQUIRE_FALSE(engine.is_ok());
  CHECK(engine.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("connecting to a destroyed engine gives kUnavailable", "[kv_transfer][local]") {
  auto writer = make_engine("writer");
  auto reader = make_engine("reader");
  auto endpoint = reader->local_endpoint();
  REQUIRE(endpoint.is_ok());
  reader.reset();
  auto connected = writer->connect(*endpoint, after(milliseconds(100)));
  REQUIRE_FALSE(connected.is_ok());
  CHECK(connected.status().code() == StatusCode::kUnavailable);
}

TEST_CASE("submitting to a destroyed peer fails with kUnavailable", "[kv_transfer][local]") {
  ConnectedPair pair;
  pair.reader.reset();
  const std::vector<WriteOp> ops = {pair.block_op(0, 0)};
  auto writes = pair.writer->submit_writes(pair.peer, ops);
  REQUIRE_FALSE(writes.is_ok());
  CHECK(writes.status().code() == StatusCode::kUnavailable);
  CHECK(pair.writer->notify(pair.peer, as_bytes("late")).status().code() == StatusCode::kUnavailable);
  CHECK(pair.writer->peer_status(pair.peer).code() == StatusCode::kUnavailable);
  CHECK(all_zero(pair.destination));
}

TEST_CASE("a disconnected peer refuses later submissions", "[kv_transfer][local]") {
  ConnectedPair pair;
  REQUIRE(pair.writer->peer_status(pair.peer).is_ok());
  pair.writer->disconnect(pair.peer);
  const std::vector<WriteOp> ops = {pair.block_op(0, 0)};
  CHECK(pair.writer->submit_writes(pair.peer, ops).status().code() == StatusCode::kUnavailable);
  CHECK(pair.writer->notify(pair.peer, as_bytes("late")).status().code() == StatusCode::kUnavailable);
  CHECK(pair.writer->peer_status(pair.peer).code() == StatusCode::kUnavailable);
  CHECK(all_zero(pair.destination));
}

TEST_CASE("wait_notification without a message returns nullopt at its deadline", "[kv_transfer][local]") {
  auto engine = make_engine("idle");
  const auto start = Clock::now();
  auto received = engine->wait_notification(start + milliseconds(50));
  const auto waited = Clock::now() - start;
  REQUIRE(received.is_ok());
  CHECK_FALSE(received->has_value());
  CHECK(waited >= milliseconds(50));
  CHECK(waited < milliseconds(5000));
}

// Catch2 assertions are not thread-safe: the threads below report through atomics, checked on the main thread.
TEST_CASE("wait_notification wakes when a message arrives from another thread", "[kv_transfer][local]") {
  ConnectedPair pair;
  std::atomic<bool> notified{false};
  std::thread sender([&] {
    std::this_thread::sleep_for(milliseconds(20));
    notified = pair.writer->notify(pair.peer, as_bytes("wake")).is_ok();
  });
  const auto start = Clock::now();
  auto received = pair.reader->wait_notification(start + milliseconds(10000));
  const auto waited = Clock::now() - start;
  sender.join();
  CHECK(notified);
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  CHECK((*received)->message == as_bytes("wake"));
  CHECK(waited < milliseconds(5000));
}

TEST_CASE("four threads submitting to the same peer write every block", "[kv_transfer][local]") {
  ConnectedPair pair;
  const std::vector<size_t> permutation = shuffled_blocks(99);
  constexpr size_t kNumThreads = 4;
  std::latch start(kNumThreads);
  std::atomic<size_t> threads_ok{0};
  std::vector<std::thread> threads;
  for (size_t thread_index = 0; thread_index < kNumThreads; ++thread_index) {
    threads.emplace_back([&, thread_index] {
      start.arrive_and_wait();
      bool ok = true;
      for (size_t block = thread_index; block < kNumBlocks; block += kNumThreads) {
        const WriteOp op = pair.block_op(block, permutation[block]);
        auto writes = pair.writer->submit_writes(pair.peer, std::span<const WriteOp>(&op, 1));
        ok = ok && writes.is_ok() && (*writes)->wait(after(milliseconds(1000))).is_ok();
      }
      ok = ok && pair.writer->notify(pair.peer, as_bytes("thread-" + std::to_string(thread_index))).is_ok();
      if (ok) ++threads_ok;
    });
  }

  std::set<std::string> messages;  // std::string, not Bytes: GCC 12 misreports comparing byte vectors
  for (size_t received_count = 0; received_count < kNumThreads; ++received_count) {
    auto received = pair.reader->wait_notification(after(milliseconds(5000)));
    if (!received.is_ok() || !received->has_value()) break;
    const Bytes& message = (*received)->message;
    messages.emplace(reinterpret_cast<const char*>(message.data()), message.size());
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(threads_ok == kNumThreads);
  CHECK(messages.size() == kNumThreads);
  CHECK(pair.destination_holds(permutation));
}

}  // namespace
}  // namespace recgpt::kv
