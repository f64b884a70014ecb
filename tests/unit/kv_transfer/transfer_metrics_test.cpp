// Metrics of the transfer face, read back in the Prometheus text format: operations and bytes by outcome, and
// durations, for writes and notifications over the local backend.
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "kv_transfer/transfer_engine.h"
#include "tests/unit/kv_transfer/transfer_test_support.h"

namespace recgpt::kv {
namespace {

using std::chrono::milliseconds;
using testing::after;

std::string exposition(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

// The value of the sample line that starts with `series` (name and labels exactly as exposed), or -1.
double sample(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

std::unique_ptr<TransferEngine> engine(const std::string& name, std::shared_ptr<prometheus::Registry> registry) {
  TransferEngineOptions options;
  options.name = name;
  options.metrics = std::move(registry);
  auto created = create_transfer_engine("local", options);
  REQUIRE(created.is_ok());
  return std::move(created).value();
}

TEST_CASE("transfers are counted by operation and outcome, with bytes and durations", "[kv_transfer][metrics]") {
  auto registry = std::make_shared<prometheus::Registry>();
  auto writer = engine("prefill-0", registry);
  auto reader = engine("decode-0", nullptr);
  std::vector<std::byte> source = testing::random_bytes(8192, 3), destination(8192);
  auto source_region = writer->register_memory({source.data(), source.size(), MemoryKind::kHost, -1});
  auto destination_region = reader->register_memory({destination.data(), destination.size(), MemoryKind::kHost, -1});
  REQUIRE(source_region.is_ok());
  REQUIRE(destination_region.is_ok());
  auto peer = writer->connect(reader->local_endpoint().value(), after(milliseconds(1000)));
  REQUIRE(peer.is_ok());
  auto remote = writer->import_region(*peer, reader->export_region(*destination_region).value());
  REQUIRE(remote.is_ok());

  const WriteOp ops[] = {{*source_region, 0, *remote, 0, 4096}, {*source_region, 4096, *remote, 4096, 1000}};
  for (int i = 0; i < 3; ++i) {
    auto written = writer->submit_writes(*peer, ops);
    REQUIRE(written.is_ok());
    REQUIRE((*written)->wait(after(milliseconds(5000))).is_ok());
  }
  auto notified = writer->notify(*peer, testing::as_bytes("done"));
  REQUIRE(notified.is_ok());
  REQUIRE((*notified)->wait(after(milliseconds(5000))).is_ok());
  const WriteOp outside[] = {{*source_region, 0, *remote, 8000, 4096}};
  CHECK_FALSE(writer->submit_writes(*peer, outside).is_ok());

  const std::string text = exposition(*registry);
  INFO(text);
  const std::string labels = "node=\"prefill-0\",backend=\"local\"";
  CHECK(sample(text, "recgpt_kv_transfer_operations_total{" + labels + ",operation=\"writes\",outcome=\"ok\"}") == 3);
  CHECK(sample(text, "recgpt_kv_transfer_operations_total{" + labels + ",operation=\"notify\",outcome=\"ok\"}") == 1);
  CHECK(sample(text, "recgpt_kv_transfer_operations_total{" + labels + ",operation=\"writes\",outcome=\"refused\"}") ==
        1);
  CHECK(sample(text, "recgpt_kv_transfer_bytes_total{" + labels + ",outcome=\"ok\"}") == 3 * 5096);
  CHECK(sample(text, "recgpt_kv_transfer_bytes_total{" + labels + ",outcome=\"refused\"}") == 4096);
  CHECK(sample(text, "recgpt_kv_transfer_duration_seconds_count{" + labels + ",operation=\"writes\"}") == 3);
  CHECK(sample(text, "recgpt_kv_transfer_duration_seconds_bucket{" + labels + ",operation=\"writes\",le=\"+Inf\"}") ==
        3);
  // Outcomes that did not happen are there at 0 (rates and alerts see a 0 before the first failure).
  CHECK(sample(text, "recgpt_kv_transfer_operations_total{" + labels + ",operation=\"notify\",outcome=\"failed\"}") ==
        0);
  CHECK(sample(text, "recgpt_kv_transfer_bytes_total{" + labels + ",outcome=\"cancelled\"}") == 0);
}

TEST_CASE("a write to a dead peer is counted as refused or failed, never ok", "[kv_transfer][metrics]") {
  auto registry = std::make_shared<prometheus::Registry>();
  auto writer = engine("prefill-1", registry);
  auto reader = engine("decode-1", nullptr);
  std::vector<std::byte> source(4096), destination(4096);
  auto source_region = writer->register_memory({source.data(), source.size(), MemoryKind::kHost, -1});
  auto destination_region = reader->register_memory({destination.data(), destination.size(), MemoryKind::kHost, -1});
  auto peer = writer->connect(reader->local_endpoint().value(), after(milliseconds(1000)));
  REQUIRE(peer.is_ok());
  auto remote = writer->import_region(*peer, reader->export_region(*destination_region).value());
  REQUIRE(remote.is_ok());
  reader.reset();  // the peer dies: the next submission is refused
  const WriteOp op{*source_region, 0, *remote, 0, 4096};
  auto written = writer->submit_writes(*peer, {&op, 1});
  if (written.is_ok()) (void)(*written)->wait(after(milliseconds(5000)));
  const std::string text = exposition(*registry);
  INFO(text);
  const std::string labels = "node=\"prefill-1\",backend=\"local\"";
  double refused =
      sample(text, "recgpt_kv_transfer_operations_total{" + labels + ",operation=\"writes\",outcome=\"refused\"}");
  double failed =
      sample(text, "recgpt_kv_transfer_operations_total{" + labels + ",operation=\"writes\",outcome=\"failed\"}");
  CHECK(std::max(refused, 0.0) + std::max(failed, 0.0) == 1);
  CHECK(sample(text, "recgpt_kv_transfer_operations_total{" + labels + ",operation=\"writes\",outcome=\"ok\"}") == 0);
}

}  // namespace
}  // namespace recgpt::kv
