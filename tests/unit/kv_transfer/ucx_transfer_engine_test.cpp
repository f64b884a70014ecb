// The `ucx` transfer backend, driven only through the TransferEngine face: two engines of one process, each
// with its own UCP worker and progress thread, over tcp (loopback) and over shared memory.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kv_transfer/backends.h"
#include "kv_transfer/transfer_engine.h"
#include "tests/unit/kv_transfer/transfer_test_support.h"

namespace recgpt::kv {
namespace {

using testing::after;
using testing::all_zero;
using testing::as_bytes;
using testing::random_bytes;

using std::chrono::milliseconds;

constexpr size_t kBlockBytes = 16384;
constexpr size_t kNumBlocks = 32;
constexpr size_t kBufferBytes = kBlockBytes * kNumBlocks;
constexpr milliseconds kWait(5000);

// nullptr (with a visible warning) when UCX cannot open this transport here.
std::unique_ptr<TransferEngine> make_engine(const std::string& name, const std::string& tls,
                                            const std::string& write_op = "put") {
  TransferEngineOptions options;
  options.name = name;
  options.settings = {{"tls", tls}, {"write_op", write_op}};
  auto engine = create_transfer_engine("ucx", options);
  if (!engine.is_ok()) {
    WARN("ucx transport '" << tls << "' is not available here: " << engine.status().to_string());
    return nullptr;
  }
  return std::move(engine).value();
}

// A writer connected to a reader, with a source buffer of random bytes and a zeroed destination imported.
// `ready` is false (after a WARN) when the transport is not usable here.
struct ConnectedPair {
  std::vector<std::byte> source = random_bytes(kBufferBytes, 7);
  std::vector<std::byte> destination = std::vector<std::byte>(kBufferBytes);
  std::unique_ptr<TransferEngine> writer;
  std::unique_ptr<TransferEngine> reader;
  LocalRegionId source_region = 0;
  LocalRegionId destination_region = 0;
  PeerId peer = 0;
  RemoteRegionId remote_region = 0;
  bool ready = false;

  explicit ConnectedPair(const std::string& tls, const std::string& write_op = "put") {
    writer = make_engine("writer", tls, write_op);
    reader = make_engine("reader", tls);
    if (writer == nullptr || reader == nullptr) return;
    auto source_registered = writer->register_memory({source.data(), source.size(), MemoryKind::kHost, -1});
    REQUIRE(source_registered.is_ok());
    source_region = *source_registered;
    auto destination_registered =
        reader->register_memory({destination.data(), destination.size(), MemoryKind::kHost, -1});
    REQUIRE(destination_registered.is_ok());
    destination_region = *destination_registered;
    auto endpoint = reader->local_endpoint();
    REQUIRE(endpoint.is_ok());
    auto connected = writer->connect(*endpoint, after(kWait));
    if (!connected.is_ok()) {
      WARN("ucx transport '" << tls << "' cannot connect here: " << connected.status().to_string());
      return;
    }
    peer = *connected;
    auto key = reader->export_region(destination_region);
    REQUIRE(key.is_ok());
    auto imported = writer->import_region(peer, *key);
    REQUIRE(imported.is_ok());
    remote_region = *imported;
    ready = true;
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

// The transports every behaviour is checked on: loopback tcp and shared memory (posix + cma).
std::string transport() { return GENERATE(as<std::string>{}, "tcp", "posix,cma,self"); }

TEST_CASE("ucx engines write permuted blocks and the notification arrives after them", "[kv_transfer][ucx]") {
  const std::string tls = transport();
  const std::string write_op = GENERATE(as<std::string>{}, "put", "am");
  INFO("tls=" << tls << " write_op=" << write_op);
  ConnectedPair pair(tls, write_op);
  if (!pair.ready) return;
  CHECK(pair.writer->backend_name() == "ucx");
  const std::vector<size_t> permutation = shuffled_blocks(1234);
  const std::vector<WriteOp> ops = pair.block_ops(permutation);

  auto writes = pair.writer->submit_writes(pair.peer, ops);
  REQUIRE(writes.is_ok());
  // The notification is submitted before the writes are known done: ordering is the engine's job.
  auto sent = pair.writer->notify(pair.peer, as_bytes("request-17"));
  REQUIRE(sent.is_ok());

  auto received = pair.reader->wait_notification(after(kWait));
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  CHECK((*received)->message == as_bytes("request-17"));
  CHECK(pair.destination_holds(permutation));
  CHECK((*writes)->wait(after(kWait)).is_ok());
  CHECK((*writes)->poll() == TransferState::kDone);
  CHECK((*sent)->wait(after(kWait)).is_ok());
}

TEST_CASE("a ucx notification names its sender by a peer id the receiver can use", "[kv_transfer][ucx]") {
  const std::string tls = transport();
  INFO("tls=" << tls);
  ConnectedPair pair(tls);
  if (!pair.ready) return;
  REQUIRE(pair.writer->notify(pair.peer, as_bytes("hello")).is_ok());
  auto received = pair.reader->wait_notification(after(kWait));
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  const PeerId sender = (*received)->peer;
  CHECK(pair.reader->peer_status(sender).is_ok());

  REQUIRE(pair.writer->notify(pair.peer, as_bytes("again")).is_ok());
  auto second = pair.reader->wait_notification(after(kWait));
  REQUIRE(second.is_ok());
  REQUIRE(second->has_value());
  CHECK((*second)->peer == sender);
  CHECK((*second)->message == as_bytes("again"));

  // The receiver can answer on that id.
  REQUIRE(pair.reader->notify(sender, as_bytes("reply")).is_ok());
  auto reply = pair.writer->wait_notification(after(kWait));
  REQUIRE(reply.is_ok());
  REQUIRE(reply->has_value());
  CHECK((*reply)->peer == pair.peer);
}

TEST_CASE("an out-of-bounds ucx op is refused by name and nothing is written", "[kv_transfer][ucx]") {
  const std::string write_op = GENERATE(as<std::string>{}, "put", "am");
  ConnectedPair pair("tcp", write_op);
  if (!pair.ready) return;
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
  // A later notification proves the writer sent nothing before it.
  REQUIRE(pair.writer->notify(pair.peer, as_bytes("after")).is_ok());
  auto received = pair.reader->wait_notification(after(kWait));
  REQUIRE(received.is_ok());
  CHECK(received->has_value());
  CHECK(all_zero(pair.destination));
}

TEST_CASE("garbage ucx endpoint and region key bytes are refused", "[kv_transfer][ucx]") {
  ConnectedPair pair("tcp");
  if (!pair.ready) return;
  const Bytes short_garbage = as_bytes("xyz");
  const Bytes zeros(64);
  auto key = pair.reader->export_region(pair.destination_region);
  REQUIRE(key.is_ok());
  auto endpoint = pair.reader->local_endpoint();
  REQUIRE(endpoint.is_ok());
  Bytes truncated_endpoint(endpoint->begin(), endpoint->end() - 1);

  for (const Bytes& bad_endpoint : {short_garbage, zeros, Bytes(endpoint->size()), key.value(), truncated_endpoint}) {
    auto connected = pair.writer->connect(bad_endpoint, after(milliseconds(500)));
    REQUIRE_FALSE(connected.is_ok());
    CHECK(connected.status().code() == StatusCode::kInvalidArgument);
  }
  Bytes truncated_key(key->begin(), key->end() - 1);
  for (const Bytes& bad_key : {short_garbage, zeros, Bytes(key->size()), endpoint.value(), truncated_key}) {
    auto imported = pair.writer->import_region(pair.peer, bad_key);
    REQUIRE_FALSE(imported.is_ok());
    CHECK(imported.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("the ucx backend refuses settings it does not know", "[kv_transfer][ucx]") {
  TransferEngineOptions options;
  options.settings = {{"tls", "tcp"}, {"colour", "blue"}};
  auto engine = create_transfer_engine("ucx", options);
  REQUIRE_FALSE(engine.is_ok());
  CHECK(engine.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(engine.status().message(), Catch::Contains("colour"));

  options.settings = {{"write_op", "get"}};
  auto bad_write_op = create_transfer_engine("ucx", options);
  REQUIRE_FALSE(bad_write_op.is_ok());
  CHECK(bad_write_op.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(bad_write_op.status().message(), Catch::Contains("get"));
}

TEST_CASE("ucx active-message writes of large and tiny ops land before the notification", "[kv_transfer][ucx]") {
  const std::string tls = transport();
  INFO("tls=" << tls);
  auto writer = make_engine("writer", tls, "am");
  auto reader = make_engine("reader", tls, "am");
  if (writer == nullptr || reader == nullptr) return;
  constexpr size_t kLargeBytes = 4 << 20;  // rendezvous on every transport
  std::vector<std::byte> source = random_bytes(kLargeBytes + 3, 11);
  std::vector<std::byte> destination(kLargeBytes + 3);
  auto source_region = writer->register_memory({source.data(), source.size(), MemoryKind::kHost, -1});
  auto destination_region = reader->register_memory({destination.data(), destination.size(), MemoryKind::kHost, -1});
  REQUIRE(source_region.is_ok());
  REQUIRE(destination_region.is_ok());
  auto peer = writer->connect(reader->local_endpoint().value(), after(kWait));
  if (!peer.is_ok()) {
    WARN("ucx transport '" << tls << "' cannot connect here: " << peer.status().to_string());
    return;
  }
  auto remote = writer->import_region(*peer, reader->export_region(*destination_region).value());
  REQUIRE(remote.is_ok());
  const std::vector<WriteOp> ops = {{*source_region, 0, *remote, 0, kLargeBytes},
                                    {*source_region, kLargeBytes, *remote, kLargeBytes, 3}};
  auto writes = writer->submit_writes(*peer, ops);
  REQUIRE(writes.is_ok());
  REQUIRE(writer->notify(*peer, as_bytes("done")).is_ok());
  auto received = reader->wait_notification(after(kWait));
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  CHECK(destination == source);
  CHECK((*writes)->wait(after(kWait)).is_ok());
}

TEST_CASE("the ucx backend refuses host memory named as CUDA memory, and empty regions", "[kv_transfer][ucx]") {
  auto engine = make_engine("solo", "tcp");
  if (engine == nullptr) return;
  std::vector<std::byte> buffer(64);
  CHECK(engine->register_memory({buffer.data(), 0, MemoryKind::kHost, -1}).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(engine->register_memory({nullptr, 64, MemoryKind::kHost, -1}).status().code() == StatusCode::kInvalidArgument);
  // Plain host memory named as CUDA: refused by ucp_mem_map (a UCX with CUDA transports), by the CUDA runtime
  // (not device memory, or no GPU: ucx_staging_test.cpp), or for want of both.
  const Status refused = engine->register_memory({buffer.data(), buffer.size(), MemoryKind::kCuda, 0}).status();
  CHECK((refused.code() == StatusCode::kInvalidArgument || refused.code() == StatusCode::kUnavailable));
}

TEST_CASE("a destroyed ucx peer makes submissions and notifications fail within the deadline", "[kv_transfer][ucx]") {
  ConnectedPair pair("tcp");
  if (!pair.ready) return;
  REQUIRE(pair.writer->submit_writes(pair.peer, pair.block_ops(shuffled_blocks(5))).is_ok());
  pair.reader.reset();

  // Either refused at submission (the error handler already ran) or failed on the handle; never a hang.
  const Deadline deadline = after(kWait);
  bool failed = false;
  while (!failed && Clock::now() < deadline) {
    auto writes = pair.writer->submit_writes(pair.peer, std::vector<WriteOp>{pair.block_op(0, 0)});
    if (!writes.is_ok()) {
      CHECK(writes.status().code() == StatusCode::kUnavailable);
      failed = true;
      break;
    }
    Status waited = (*writes)->wait(after(milliseconds(500)));
    failed = !waited.is_ok() && waited.code() != StatusCode::kDeadlineExceeded;
  }
  CHECK(failed);
  CHECK(Clock::now() < deadline);
  CHECK(pair.writer->peer_status(pair.peer).code() == StatusCode::kUnavailable);

  auto sent = pair.writer->notify(pair.peer, as_bytes("to nobody"));
  if (sent.is_ok()) {
    Status waited = (*sent)->wait(after(kWait));
    CHECK_FALSE(waited.is_ok());
  } else {
    CHECK(sent.status().code() == StatusCode::kUnavailable);
  }
}

TEST_CASE("connecting to a destroyed ucx engine fails within the deadline", "[kv_transfer][ucx]") {
  auto writer = make_engine("writer", "tcp");
  auto reader = make_engine("reader", "tcp");
  if (writer == nullptr || reader == nullptr) return;
  const Bytes endpoint = reader->local_endpoint().value();
  reader.reset();
  const Deadline deadline = after(milliseconds(2000));
  auto connected = writer->connect(endpoint, deadline);
  CHECK(Clock::now() < deadline + milliseconds(500));
  REQUIRE_FALSE(connected.is_ok());
  CHECK((connected.status().code() == StatusCode::kUnavailable ||
         connected.status().code() == StatusCode::kDeadlineExceeded));
}

TEST_CASE("a dead engine refusing a connection leaves failure detection on for the next peer", "[kv_transfer][ucx]") {
  // A prefill node asked to write to a decode node that just died: over loopback tcp the connection is refused at
  // once. The engine once took that refusal for a transport without failure detection and made every later
  // endpoint without it; the next decode node to die then left the writer's handles waiting for their deadlines
  // (and UCX 1.13 aborted the restarted decode nodes, seen under the router integration tests' restarts).
  auto writer = make_engine("writer", "tcp", "auto");
  auto dead = make_engine("dead", "tcp");
  if (writer == nullptr || dead == nullptr) return;
  const Bytes dead_endpoint = dead->local_endpoint().value();
  dead.reset();
  REQUIRE_FALSE(writer->connect(dead_endpoint, after(milliseconds(2000))).is_ok());

  std::vector<std::byte> source = random_bytes(kBufferBytes, 3);
  std::vector<std::byte> destination(kBufferBytes);
  auto reader = make_engine("reader", "tcp");
  REQUIRE(reader != nullptr);
  const LocalRegionId source_region =
      writer->register_memory({source.data(), source.size(), MemoryKind::kHost, -1}).value();
  const LocalRegionId destination_region =
      reader->register_memory({destination.data(), destination.size(), MemoryKind::kHost, -1}).value();
  const PeerId peer = writer->connect(reader->local_endpoint().value(), after(kWait)).value();
  const RemoteRegionId remote = writer->import_region(peer, reader->export_region(destination_region).value()).value();
  const std::vector<WriteOp> ops = testing::permuted_block_ops(source_region, remote, kBlockBytes, shuffled_blocks(4));
  REQUIRE(writer->submit_writes(peer, ops).value()->wait(after(kWait)).is_ok());
  CHECK(testing::permuted_blocks_landed(source, destination, kBlockBytes, shuffled_blocks(4)));

  reader.reset();
  // The error handler marks the peer dead well before any deadline: submissions are refused, or fail on the handle.
  const Deadline deadline = after(kWait);
  while (writer->peer_status(peer).is_ok() && Clock::now() < deadline) {
    auto writes = writer->submit_writes(peer, ops);
    if (writes.is_ok()) (void)(*writes)->wait(after(milliseconds(200)));
  }
  CHECK(writer->peer_status(peer).code() == StatusCode::kUnavailable);
}

TEST_CASE("a ucx watch finds the peer of an engine in contact, creates none for a stranger, and sees it die",
          "[kv_transfer][ucx][watch]") {
  ConnectedPair pair("tcp", "am");
  if (!pair.ready) return;
  // The reader has heard from the writer (a notification): it has a peer for it, the one notifications carry.
  const Bytes writer_endpoint = pair.writer->local_endpoint().value();
  CHECK(pair.reader->watch(writer_endpoint).status().code() == StatusCode::kNotFound);
  const Bytes hello = as_bytes("hello");
  REQUIRE(pair.writer->notify(pair.peer, hello).value()->wait(after(kWait)).is_ok());
  const std::optional<Notification> heard = pair.reader->wait_notification(after(kWait)).value();
  REQUIRE(heard.has_value());
  Result<PeerId> watched = pair.reader->watch(writer_endpoint);
  REQUIRE(watched.is_ok());
  CHECK(*watched == heard->peer);
  // A stranger is not connected to: not found, at once.
  auto stranger = make_engine("stranger", "tcp");
  REQUIRE(stranger != nullptr);
  CHECK(pair.reader->watch(stranger->local_endpoint().value()).status().code() == StatusCode::kNotFound);
  CHECK(pair.reader->watch(as_bytes("not an endpoint")).status().code() == StatusCode::kInvalidArgument);

  pair.writer.reset();  // its engine dies: the peer fails, and a later watch says so
  const Deadline deadline = after(kWait);
  while (pair.reader->peer_status(*watched).is_ok() && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  CHECK(pair.reader->peer_status(*watched).code() == StatusCode::kUnavailable);
  CHECK(pair.reader->watch(writer_endpoint).status().code() == StatusCode::kUnavailable);
}

TEST_CASE("cancelling a ucx batch returns once its writes stopped and leaves it cancelled or done",
          "[kv_transfer][ucx]") {
  const std::string write_op = GENERATE(as<std::string>{}, "put", "am");
  ConnectedPair pair("tcp", write_op);
  if (!pair.ready) return;
  auto writes = pair.writer->submit_writes(pair.peer, pair.block_ops(shuffled_blocks(9)));
  REQUIRE(writes.is_ok());
  (*writes)->cancel();
  const TransferState state = (*writes)->poll();
  CHECK((state == TransferState::kCancelled || state == TransferState::kDone));
  if (state == TransferState::kCancelled) CHECK_FALSE((*writes)->status().is_ok());
  // The connection still works after a cancel.
  auto again = pair.writer->submit_writes(pair.peer, pair.block_ops(shuffled_blocks(10)));
  REQUIRE(again.is_ok());
  CHECK((*again)->wait(after(kWait)).is_ok());
  CHECK(pair.destination_holds(shuffled_blocks(10)));
}

TEST_CASE("a disconnected ucx peer refuses later submissions", "[kv_transfer][ucx]") {
  ConnectedPair pair("tcp");
  if (!pair.ready) return;
  pair.writer->disconnect(pair.peer);
  auto writes = pair.writer->submit_writes(pair.peer, std::vector<WriteOp>{pair.block_op(0, 0)});
  REQUIRE_FALSE(writes.is_ok());
  CHECK(writes.status().code() == StatusCode::kUnavailable);
  CHECK(pair.writer->peer_status(pair.peer).code() == StatusCode::kUnavailable);
}

TEST_CASE("a ucx engine keeps the records of its most recent dead peers only", "[kv_transfer][ucx]") {
  ConnectedPair pair("tcp");
  if (!pair.ready) return;
  auto endpoint = pair.reader->local_endpoint();
  REQUIRE(endpoint.is_ok());
  std::vector<PeerId> ids = {pair.peer};
  pair.writer->disconnect(pair.peer);
  for (size_t i = 0; i < kUcxRetainedDeadPeers + 1; ++i) {
    auto connected = pair.writer->connect(*endpoint, after(kWait));
    REQUIRE(connected.is_ok());
    ids.push_back(*connected);
    pair.writer->disconnect(*connected);
  }
  // The two oldest are forgotten; the rest still say they were disconnected.
  CHECK(pair.writer->peer_status(ids[0]).code() == StatusCode::kNotFound);
  CHECK(pair.writer->peer_status(ids[1]).code() == StatusCode::kNotFound);
  CHECK(pair.writer->peer_status(ids[2]).code() == StatusCode::kUnavailable);
  CHECK(pair.writer->peer_status(ids.back()).code() == StatusCode::kUnavailable);
  // And the engine still connects and writes.
  auto again = pair.writer->connect(*endpoint, after(kWait));
  REQUIRE(again.is_ok());
  CHECK(pair.writer->peer_status(*again).is_ok());
}

TEST_CASE("ucx wait_notification without a message returns nullopt at its deadline", "[kv_transfer][ucx]") {
  auto engine = make_engine("solo", "tcp");
  if (engine == nullptr) return;
  const auto started = Clock::now();
  auto received = engine->wait_notification(after(milliseconds(50)));
  REQUIRE(received.is_ok());
  CHECK_FALSE(received->has_value());
  CHECK(Clock::now() - started < milliseconds(2000));
}

}  // namespace
}  // namespace recgpt::kv
