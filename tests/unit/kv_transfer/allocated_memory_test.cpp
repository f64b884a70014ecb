// Memory allocated through the face (allocate_memory), on every backend available here: zeroed, writable by a
// peer like registered memory, freed with its registration.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "kv_transfer/transfer_engine.h"
#include "tests/unit/kv_transfer/transfer_test_support.h"

namespace recgpt::kv {
namespace {

using std::chrono::milliseconds;
using testing::after;

constexpr size_t kBlockBytes = 8192;
constexpr size_t kNumBlocks = 24;

std::unique_ptr<TransferEngine> make_engine(const std::string& backend, const std::string& tls,
                                            const std::string& name) {
  TransferEngineOptions options;
  options.name = name;
  if (!tls.empty()) options.settings = {{"tls", tls}};
  auto engine = create_transfer_engine(backend, options);
  REQUIRE(engine.is_ok());
  return std::move(engine).value();
}

TEST_CASE("allocated regions start zeroed, take a peer's writes and are freed with their registration",
          "[kv_transfer][allocate]") {
  const auto [backend, tls] =
      GENERATE(values<std::pair<std::string, std::string>>({{"local", ""}, {"ucx", "tcp"}, {"ucx", "posix,cma,self"}}));
  INFO("backend " << backend << " tls " << tls);
  auto writer = make_engine(backend, tls, "writer");
  auto reader = make_engine(backend, tls, "reader");
  auto source = writer->allocate_memory(kBlockBytes * kNumBlocks);
  auto destination = reader->allocate_memory(kBlockBytes * kNumBlocks);
  REQUIRE(source.is_ok());
  REQUIRE(destination.is_ok());
  std::vector<std::byte> zeros(kBlockBytes * kNumBlocks);
  CHECK(std::memcmp(destination->base, zeros.data(), zeros.size()) == 0);
  const std::vector<std::byte> pattern = testing::random_bytes(kBlockBytes * kNumBlocks, 5);
  std::memcpy(source->base, pattern.data(), pattern.size());

  auto peer = writer->connect(reader->local_endpoint().value(), after(milliseconds(5000)));
  REQUIRE(peer.is_ok());
  auto remote = writer->import_region(*peer, reader->export_region(destination->id).value());
  REQUIRE(remote.is_ok());
  const std::vector<size_t> permutation = testing::shuffled_block_order(kNumBlocks, 77);
  const std::vector<WriteOp> ops = testing::permuted_block_ops(source->id, *remote, kBlockBytes, permutation);
  auto written = writer->submit_writes(*peer, ops);
  REQUIRE(written.is_ok());
  REQUIRE((*written)->wait(after(milliseconds(5000))).is_ok());
  auto notified = writer->notify(*peer, testing::as_bytes("done"));
  REQUIRE(notified.is_ok());
  auto received = reader->wait_notification(after(milliseconds(5000)));
  REQUIRE(received.is_ok());
  REQUIRE(received->has_value());
  for (size_t block = 0; block < kNumBlocks; ++block) {
    INFO("block " << block);
    CHECK(std::memcmp(destination->base + permutation[block] * kBlockBytes, pattern.data() + block * kBlockBytes,
                      kBlockBytes) == 0);
  }
  CHECK(reader->deregister_memory(destination->id).is_ok());
  CHECK(reader->deregister_memory(destination->id).code() == StatusCode::kNotFound);
  CHECK(writer->deregister_memory(source->id).is_ok());
}

TEST_CASE("an empty allocation is refused", "[kv_transfer][allocate]") {
  for (const std::string backend : {"local", "ucx"}) {
    auto engine = make_engine(backend, backend == "ucx" ? "tcp" : "", "engine");
    CHECK(engine->allocate_memory(0).status().code() == StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace recgpt::kv
