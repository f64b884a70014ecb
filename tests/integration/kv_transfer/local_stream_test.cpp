// The `local` backend (in-process memcpy, for colocated mode) under the same stream scenario as the two-process
// ucx tests: a writer thread pushes a random block mapping and the reader checks every byte. (A writer engine
// destroyed mid-stream is tests/unit/kv_transfer/kv_stream_test.cpp's.)
#include <catch2/catch.hpp>
#include <thread>

#include "kv_transfer/kv_stream.h"
#include "kv_transfer/transfer_engine.h"
#include "tests/integration/kv_transfer/stream_scenario.h"

namespace recgpt::kv::testing {
namespace {

using std::chrono::milliseconds;

Deadline after(milliseconds timeout) { return Clock::now() + timeout; }

std::unique_ptr<TransferEngine> make_local_engine(const std::string& name) {
  TransferEngineOptions options;
  options.name = name;
  auto engine = create_transfer_engine("local", options);
  REQUIRE(engine.is_ok());
  return std::move(engine).value();
}

// A reader engine with a receiver, and a writer engine connected both ways to it.
struct LocalPair {
  StreamScenario scenario;
  std::unique_ptr<TransferEngine> reader = make_local_engine("reader");
  std::unique_ptr<TransferEngine> writer = make_local_engine("writer");
  CacheMemory source;
  CacheMemory destination;
  std::unique_ptr<KvStreamReceiver> receiver = std::make_unique<KvStreamReceiver>(*reader);
  KvStreamWriterConfig writer_setup;

  explicit LocalPair(uint64_t seed)
      : scenario(StreamScenario::from_seed(seed, 6)), source(scenario.source), destination(scenario.destination) {
    fill_source_pattern(source, seed);
    destination.fill(std::byte{0});
    auto source_region = writer->register_memory(source.region());
    auto destination_region = reader->register_memory(destination.region());
    REQUIRE(source_region.is_ok());
    REQUIRE(destination_region.is_ok());
    auto reader_at_writer = writer->connect(reader->local_endpoint().value(), after(milliseconds(1000)));
    auto writer_at_reader = reader->connect(writer->local_endpoint().value(), after(milliseconds(1000)));
    REQUIRE(reader_at_writer.is_ok());
    REQUIRE(writer_at_reader.is_ok());
    auto imported = writer->import_region(*reader_at_writer, reader->export_region(*destination_region).value());
    REQUIRE(imported.is_ok());
    writer_setup = writer_config(scenario, *reader_at_writer, *source_region, *imported, source);
    REQUIRE(receiver
                ->expect(scenario.request_id, *writer_at_reader, after(milliseconds(20000)),
                         destination_view(scenario, destination))
                .is_ok());
  }
};

TEST_CASE("a local writer thread streams a random block mapping and the reader checks every byte",
          "[kv_transfer][local][stream]") {
  LocalPair pair(53);
  Status written;  // no assertion on the writer thread: Catch2's are not thread-safe, and a throw there aborts
  std::thread writer_thread([&] {
    auto writer = KvStreamWriter::create(*pair.writer, pair.writer_setup);
    written = writer.status();
    for (int layer = 0; written.is_ok() && layer < pair.scenario.source.num_layers; ++layer)
      written = (*writer)->write_layer(layer);
    if (written.is_ok()) written = (*writer)->finish(after(milliseconds(20000)));
  });
  auto completion = pair.receiver->wait(pair.scenario.request_id, after(milliseconds(20000)));
  writer_thread.join();
  CHECK(written.to_string() == Status::ok().to_string());
  REQUIRE(completion.is_ok());
  CHECK(completion->checksum_verified);
  Mismatches mismatches = count_mismatches(pair.scenario, pair.destination, all_layers(pair.scenario));
  CHECK(mismatches.checked == 6u * 2 * pair.scenario.source_blocks.size() * pair.scenario.source.block_bytes());
  CHECK(mismatches.differing == 0);
}

}  // namespace
}  // namespace recgpt::kv::testing
