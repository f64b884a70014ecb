// KV streams between two processes in CUDA device memory over the nccl backend (and over ucx): a writer child and
// a reader child, this test relaying their endpoints. With two GPUs the bytes go over NCCL; with one, both
// processes share it and the backend copies through CUDA IPC. The reader checks every byte of the mapped blocks.
// Without a GPU (or a build without CUDA) each test says "SKIPPED:" and ctest counts it as skipped.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "kv_transfer/kv_stream.h"
#include "kv_transfer/transfer_engine.h"
#include "tests/integration/kv_transfer/device_memory.h"
#include "tests/integration/kv_transfer/peer_process.h"

namespace recgpt::kv::testing {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kFailureDeadline(5000);  // how long the reader waits for a writer that died
constexpr milliseconds kDeadlineSlack(2000);

// The reason these tests cannot run here, or empty.
std::string why_no_gpu_run() {
  const std::vector<std::string> backends = transfer_backends();
  if (std::find(backends.begin(), backends.end(), "nccl") == backends.end()) {
    return "the nccl backend is not in this build (no CUDA runtime or NCCL found)";
  }
  return cuda_devices().why_none;
}

// A peer child over nccl with its cache in device memory.
PeerProcess gpu_peer(const std::string& role, int device, uint64_t seed, int layers, int layer_delay_ms = 0) {
  return PeerProcess(role, {"--backend", "nccl", "--setting", "device=" + std::to_string(device), "--memory", "cuda"},
                     seed, layers, layer_delay_ms);
}

// Hands each child the other's endpoint, in the order the peer protocol wants, and lets the writer go.
void introduce(PeerProcess& writer, PeerProcess& reader) {
  std::vector<std::string> reader_endpoint = reader.expect("endpoint");
  std::vector<std::string> writer_endpoint = writer.expect("endpoint");
  writer.say("reader " + reader_endpoint.at(1) + " " + reader_endpoint.at(2));
  writer.expect("connected");
  reader.say("writer " + writer_endpoint.at(1));
  reader.expect("expecting");
  writer.say("go");
}

// One whole stream: the writer writes every layer, the reader checks every byte, both exit cleanly.
void stream_and_check(PeerProcess& writer, PeerProcess& reader) {
  introduce(writer, reader);
  CHECK(writer.expect("finished").at(1) == "ok");
  std::vector<std::string> received = reader.expect("received");
  REQUIRE(received.at(1) == "ok");
  CHECK(std::stoull(received.at(2)) > 0);
  reader.process().close_stdin();
  CHECK(reader.process().wait(after(kStepTimeout)).value() == 0);
  CHECK(writer.process().wait(after(kStepTimeout)).value() == 0);
}

// Writer on device 0; reader on device 1 when there is one (NCCL), else on device 0 too (CUDA IPC).
int reader_device() { return cuda_devices().count > 1 ? 1 : 0; }

TEST_CASE("a writer process streams device blocks into a reader process, which checks every byte",
          "[kv_transfer][nccl][gpu][two_process]") {
  if (std::string why = why_no_gpu_run(); !why.empty()) {
    WARN("SKIPPED: " << why);
    return;
  }
  INFO("reader on device " << reader_device() << (reader_device() == 0 ? " (CUDA IPC)" : " (NCCL)"));
  PeerProcess reader = gpu_peer("reader", reader_device(), 53, 6);
  PeerProcess writer = gpu_peer("writer", 0, 53, 6);
  stream_and_check(writer, reader);
}

TEST_CASE("a writer process killed mid-stream fails the reader process's wait within its deadline",
          "[kv_transfer][nccl][gpu][two_process]") {
  if (std::string why = why_no_gpu_run(); !why.empty()) {
    WARN("SKIPPED: " << why);
    return;
  }
  PeerProcess reader = gpu_peer("reader", reader_device(), 59, 8);
  PeerProcess writer = gpu_peer("writer", 0, 59, 8, /*layer_delay_ms=*/300);
  introduce(writer, reader);
  writer.expect("layer");
  const auto start = Clock::now();
  writer.process().kill(SIGKILL);
  REQUIRE(writer.process().wait(after(kStepTimeout)).value() == -SIGKILL);
  std::vector<std::string> received = reader.expect("received");
  const auto waited = Clock::now() - start;
  CHECK(received.at(1) != "ok");
  // The reader waits up to its step timeout; the dead writer must be noticed well before.
  CHECK(waited <= kFailureDeadline + kDeadlineSlack);
}

TEST_CASE("over ucx a writer process streams device blocks into a reader process's device blocks",
          "[kv_transfer][ucx][gpu][two_process]") {
  // Where UCX has no CUDA transport (Debian's build) the engines stage the blocks through host memory.
  if (std::string why = cuda_devices().why_none; !why.empty()) {
    WARN("SKIPPED: " << why);
    return;
  }
  const std::string tls = GENERATE(as<std::string>{}, "tcp", "posix,cma,self");
  INFO("tls=" << tls);
  auto ucx_peer = [&tls](const std::string& role) {
    return PeerProcess(role, {"--backend", "ucx", "--setting", "tls=" + tls, "--memory", "cuda"}, 67, 6);
  };
  PeerProcess reader = ucx_peer("reader");
  PeerProcess writer = ucx_peer("writer");
  stream_and_check(writer, reader);
}

TEST_CASE("two nccl engines of one process on one GPU write each other's device blocks, notification last",
          "[kv_transfer][nccl][gpu]") {
  if (std::string why = why_no_gpu_run(); !why.empty()) {
    WARN("SKIPPED: " << why);
    return;
  }
  const StreamScenario scenario = StreamScenario::from_seed(61, 4);
  auto make = [](const std::string& name) {
    TransferEngineOptions options;
    options.name = name;
    auto engine = create_transfer_engine("nccl", options);
    REQUIRE(engine.is_ok());
    return std::move(engine).value();
  };
  auto writer = make("writer");
  auto reader = make("reader");
  CacheMemory source(scenario.source);
  fill_source_pattern(source, scenario.seed);
  CacheMemory destination(scenario.destination);
  destination.fill(std::byte{0});
  auto device_source = DeviceMemory::allocate(source.size(), 0);
  auto device_destination = DeviceMemory::allocate(destination.size(), 0);
  REQUIRE(device_source.is_ok());
  REQUIRE(device_destination.is_ok());
  REQUIRE(device_source->upload(source).is_ok());
  REQUIRE(device_destination->upload(destination).is_ok());
  auto source_region = writer->register_memory(device_source->region());
  auto destination_region = reader->register_memory(device_destination->region());
  REQUIRE(source_region.is_ok());
  REQUIRE(destination_region.is_ok());

  auto endpoint = reader->local_endpoint();
  auto key = reader->export_region(*destination_region);
  REQUIRE(endpoint.is_ok());
  REQUIRE(key.is_ok());
  auto peer = writer->connect(*endpoint, after(kStepTimeout));
  REQUIRE(peer.is_ok());
  auto imported = writer->import_region(*peer, *key);
  REQUIRE(imported.is_ok());
  auto stream = KvStreamWriter::create(*writer, writer_config(scenario, *peer, *source_region, *imported, source));
  REQUIRE(stream.is_ok());
  for (int layer = 0; layer < scenario.source.num_layers; ++layer) REQUIRE((*stream)->write_layer(layer).is_ok());
  REQUIRE((*stream)->finish(after(kStepTimeout)).is_ok());

  // `started` comes first; `completed` once the writes landed.
  bool completed = false;
  for (int i = 0; i < 2 && !completed; ++i) {
    auto notification = reader->wait_notification(after(kStepTimeout));
    REQUIRE(notification.is_ok());
    REQUIRE(notification->has_value());
    auto decoded = decode_stream_notification((*notification)->message);
    REQUIRE(decoded.is_ok());
    completed = decoded->kind == StreamEventKind::kCompleted;
  }
  REQUIRE(completed);
  REQUIRE(device_destination->download(destination).is_ok());
  Mismatches mismatches = count_mismatches(scenario, destination, all_layers(scenario));
  CHECK(mismatches.checked > 0);
  CHECK(mismatches.differing == 0);
}

}  // namespace
}  // namespace recgpt::kv::testing
