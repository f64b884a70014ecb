// KV streams between two processes: this test process and a kv_transfer_peer child, over the ucx backend on
// loopback tcp and on shared memory. The writer's cache holds a seeded pattern; the reader checks every byte of
// the mapped blocks (and the writer's checksum) after the notification. Then the failures: a writer killed
// mid-stream, and a reader killed mid-stream, each noticed within the waiting side's deadline.
#include <signal.h>

#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/hex.h"
#include "common/subprocess.h"
#include "kv_transfer/kv_stream.h"
#include "kv_transfer/transfer_engine.h"
#include "tests/integration/kv_transfer/peer_process.h"
#include "tests/integration/kv_transfer/stream_scenario.h"

namespace recgpt::kv::testing {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kFailureDeadline(5000);  // how long a side waits for a peer that died
constexpr milliseconds kDeadlineSlack(2000);    // how late past its deadline a wait may return

struct Transport {
  std::string tls;
  bool detects_dead_peers;  // UCX's shared-memory transports refuse peer error handling
};

Transport transport() { return GENERATE(values<Transport>({{"tcp", true}, {"posix,cma,self", false}})); }

// A kv_transfer_peer child over ucx with the transport's tls.
class Peer : public PeerProcess {
 public:
  Peer(const std::string& role, const std::string& tls, uint64_t seed, int layers, int layer_delay_ms = 0)
      : PeerProcess(role, {"--backend", "ucx", "--setting", "tls=" + tls}, seed, layers, layer_delay_ms) {}
};

std::unique_ptr<TransferEngine> make_engine(const std::string& name, const std::string& tls) {
  TransferEngineOptions options;
  options.name = name;
  options.settings = {{"tls", tls}};
  auto engine = create_transfer_engine("ucx", options);
  REQUIRE(engine.is_ok());
  return std::move(engine).value();
}

std::vector<std::byte> bytes_of(const std::string& hex) {
  auto bytes = from_hex(hex);
  REQUIRE(bytes.is_ok());
  return std::move(bytes).value();
}

// This process as the reader: a receiver over a zeroed destination cache.
struct LocalReader {
  StreamScenario scenario;
  std::unique_ptr<TransferEngine> engine;
  CacheMemory destination;
  LocalRegionId region = 0;
  std::unique_ptr<KvStreamReceiver> receiver;

  LocalReader(uint64_t seed, int layers, const std::string& tls)
      : scenario(StreamScenario::from_seed(seed, layers)),
        engine(make_engine("reader", tls)),
        destination(scenario.destination) {
    destination.fill(std::byte{0});
    auto registered = engine->register_memory(destination.region());
    REQUIRE(registered.is_ok());
    region = *registered;
    receiver = std::make_unique<KvStreamReceiver>(*engine);
  }

  // Hands a writer child that printed its endpoint this reader's endpoint and region key; once the writer is
  // connected, connects back, expects the request and lets the writer go.
  void accept(Peer& writer) {
    std::vector<std::string> endpoint = writer.expect("endpoint");
    auto own_endpoint = engine->local_endpoint();
    auto key = engine->export_region(region);
    REQUIRE(own_endpoint.is_ok());
    REQUIRE(key.is_ok());
    writer.say("reader " + to_hex(*own_endpoint) + " " + to_hex(*key));
    writer.expect("connected");
    auto peer = engine->connect(bytes_of(endpoint.at(1)), after(kStepTimeout));
    REQUIRE(peer.is_ok());
    REQUIRE(receiver->expect(scenario.request_id, *peer, after(kStepTimeout), destination_view(scenario, destination))
                .is_ok());
    writer.say("go");
  }

  // Waits for the whole stream and checks every byte of the mapped blocks.
  void require_complete_stream() {
    auto completion = receiver->wait(scenario.request_id, after(kStepTimeout));
    INFO("the stream ended with " << completion.status().to_string());
    REQUIRE(completion.is_ok());
    CHECK(completion->layers == all_layers(scenario));
    CHECK(completion->checksum_verified);
    Mismatches mismatches = count_mismatches(scenario, destination, all_layers(scenario));
    CHECK(mismatches.checked == static_cast<uint64_t>(scenario.source.num_layers) * 2 * scenario.source_blocks.size() *
                                    scenario.source.block_bytes());
    CHECK(mismatches.differing == 0);
  }
};

// This process as the writer: a source cache with the scenario's pattern, streamed to reader children one at a
// time (as a prefill node outlives the decode nodes it writes to).
struct LocalWriter {
  StreamScenario scenario;
  std::unique_ptr<TransferEngine> engine;
  CacheMemory source;
  LocalRegionId source_region = 0;
  std::unique_ptr<KvStreamWriter> writer;  // to the reader connected last

  LocalWriter(uint64_t seed, int layers, const std::string& tls)
      : scenario(StreamScenario::from_seed(seed, layers)), engine(make_engine("writer", tls)), source(scenario.source) {
    fill_source_pattern(source, scenario.seed);
    auto registered = engine->register_memory(source.region());
    REQUIRE(registered.is_ok());
    source_region = *registered;
  }

  // Connects to a reader child that printed its endpoint and region key, and makes `writer` a stream to it.
  void connect(Peer& reader) {
    std::vector<std::string> endpoint = reader.expect("endpoint");
    auto peer = engine->connect(bytes_of(endpoint.at(1)), after(kStepTimeout));
    REQUIRE(peer.is_ok());
    auto destination = engine->import_region(*peer, bytes_of(endpoint.at(2)));
    REQUIRE(destination.is_ok());
    auto own_endpoint = engine->local_endpoint();
    REQUIRE(own_endpoint.is_ok());
    reader.say("writer " + to_hex(*own_endpoint));
    reader.expect("expecting");
    auto created = KvStreamWriter::create(*engine, writer_config(scenario, *peer, source_region, *destination, source));
    REQUIRE(created.is_ok());
    writer = std::move(created).value();
  }

  // Writes every layer to the reader connected last, which must find every byte right and exit 0.
  void stream_whole_to(Peer& reader) {
    for (int layer = 0; layer < scenario.source.num_layers; ++layer) REQUIRE(writer->write_layer(layer).is_ok());
    REQUIRE(writer->finish(after(kStepTimeout)).is_ok());
    std::vector<std::string> received = reader.expect("received");
    CHECK(received.at(1) == "ok");
    reader.process().close_stdin();
    CHECK(reader.process().wait(after(kStepTimeout)).value() == 0);
  }
};

TEST_CASE("a writer process streams a random block mapping and this reader checks every byte",
          "[kv_transfer][ucx][two_process]") {
  const Transport via = transport();
  INFO("tls=" << via.tls);
  LocalReader reader(11, 6, via.tls);
  Peer writer("writer", via.tls, 11, 6);
  reader.accept(writer);
  reader.require_complete_stream();
  CHECK(writer.expect("finished").at(1) == "ok");
  CHECK(writer.process().wait(after(kStepTimeout)).value() == 0);
}

TEST_CASE("this writer streams into a reader process, which checks every byte", "[kv_transfer][ucx][two_process]") {
  const Transport via = transport();
  INFO("tls=" << via.tls);
  Peer reader("reader", via.tls, 23, 6);
  LocalWriter writer(23, 6, via.tls);
  writer.connect(reader);
  writer.stream_whole_to(reader);
}

TEST_CASE("a writer killed mid-stream fails the reader's wait within its deadline, and the blocks take a new stream",
          "[kv_transfer][ucx][two_process]") {
  const Transport via = transport();
  INFO("tls=" << via.tls);
  LocalReader reader(37, 8, via.tls);
  {
    Peer writer("writer", via.tls, 37, 8, /*layer_delay_ms=*/300);
    reader.accept(writer);
    writer.expect("layer");  // layer 0 submitted; 7 more to go, 300 ms apart
    if (!via.detects_dead_peers) {
      // Over shared memory the kill lands between layers, once layer 0's messages are out: a sender killed while
      // putting a message into the receiver's FIFO (UCX's mm transport) leaves that element unfinished, and the
      // receiver, reading the FIFO in order, then gets nothing more from any sender (the second writer's stream
      // below never arrived, about 1 run in 40 under load). docs/architecture.md, KV transfer.
      std::this_thread::sleep_for(milliseconds(150));
    }
    writer.process().kill(SIGKILL);
    REQUIRE(writer.process().wait(after(kStepTimeout)).value() == -SIGKILL);
  }
  const auto start = Clock::now();
  auto completion = reader.receiver->wait(reader.scenario.request_id, after(kFailureDeadline));
  const auto waited = Clock::now() - start;
  INFO("wait returned " << completion.status().to_string());
  REQUIRE_FALSE(completion.is_ok());
  CHECK(waited <= kFailureDeadline + kDeadlineSlack);
  CHECK(completion.status().code() ==
        (via.detects_dead_peers ? StatusCode::kUnavailable : StatusCode::kDeadlineExceeded));

  // The dead writer can no longer touch the blocks: overwrite them and stream the request again into them.
  reader.receiver->forget(reader.scenario.request_id);  // a deadline leaves the expectation to its owner
  reader.destination.fill(std::byte{0xee});
  Peer second_writer("writer", via.tls, 37, 8);
  reader.accept(second_writer);
  reader.require_complete_stream();
  CHECK(second_writer.expect("finished").at(1) == "ok");
}

TEST_CASE("a reader killed mid-stream fails the writer within its deadline", "[kv_transfer][ucx][two_process]") {
  const Transport via = transport();
  INFO("tls=" << via.tls);
  Peer reader("reader", via.tls, 41, 8);
  LocalWriter writer(41, 8, via.tls);
  writer.connect(reader);
  REQUIRE(writer.writer->write_layer(0).is_ok());
  reader.process().kill(SIGKILL);
  REQUIRE(reader.process().wait(after(kStepTimeout)).value() == -SIGKILL);

  const auto start = Clock::now();
  Status status = Status::ok();
  for (int layer = 1; layer < writer.scenario.source.num_layers && status.is_ok(); ++layer) {
    status = writer.writer->write_layer(layer);
  }
  Status finished = writer.writer->finish(after(kFailureDeadline));
  const auto waited = Clock::now() - start;
  INFO("write_layer: " << status.to_string() << "; finish: " << finished.to_string());
  REQUIRE_FALSE(finished.is_ok());
  CHECK(waited <= kFailureDeadline + kDeadlineSlack);
}

TEST_CASE("a writer outlives readers killed mid-stream: the next reader gets the whole stream",
          "[kv_transfer][ucx][two_process]") {
  // As a prefill node outlives the decode nodes that die and come back: each dead reader's endpoint failed (and
  // the writer's engine closed it), and the writer still connects to and streams into the next reader.
  constexpr int kDeadReaders = 6;
  LocalWriter writer(53, 8, "tcp");
  for (int i = 0; i < kDeadReaders; ++i) {
    Peer reader("reader", "tcp", 53, 8);
    writer.connect(reader);
    REQUIRE(writer.writer->write_layer(0).is_ok());
    reader.process().kill(SIGKILL);
    REQUIRE(reader.process().wait(after(kStepTimeout)).value() == -SIGKILL);
    for (int layer = 1; layer < writer.scenario.source.num_layers; ++layer) (void)writer.writer->write_layer(layer);
    REQUIRE_FALSE(writer.writer->finish(after(kFailureDeadline)).is_ok());
  }
  Peer reader("reader", "tcp", 53, 8);
  writer.connect(reader);
  writer.stream_whole_to(reader);
}

}  // namespace
}  // namespace recgpt::kv::testing
