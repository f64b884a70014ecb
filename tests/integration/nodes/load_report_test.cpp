// Both nodes tell their peers which prefix blocks they hold, for the router's cache-aware placement: the first
// LoadReport to a peer carries the whole index, later ones the changes. Replaying them must give an index that
// holds the latest prompt's full blocks and has dropped the oldest prompt's, once the small pools had to evict.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <unordered_set>

#include "engine/block_hash.h"
#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {

// The index a peer rebuilds from the reports it got, in order.
std::unordered_set<uint64_t> replay(const std::vector<control::LoadReport>& reports) {
  std::unordered_set<uint64_t> index;
  for (const control::LoadReport& report : reports) {
    if (report.prefix_blocks_snapshot()) index.clear();
    index.insert(report.prefix_blocks_added().begin(), report.prefix_blocks_added().end());
    for (uint64_t hash : report.prefix_blocks_evicted()) index.erase(hash);
  }
  return index;
}

std::vector<uint64_t> full_block_hashes(const std::vector<int32_t>& prompt) {
  const std::vector<uint64_t> no_entities(prompt.size(), 0);
  return compute_block_hashes(prompt, no_entities, 16);
}

TEST_CASE("both nodes report their prefix index to peers: whole at first, then the changes", "[nodes][load_report]") {
  TinyModel tiny;
  // 1 MiB pools: 128 blocks of the tiny model, so 15 prompts of 10 blocks each make both nodes evict.
  Node decode_node("decode", tiny, "tcp", 1);
  Node prefill_node("prefill", tiny, "tcp", 1);
  const ModelConfig& config = tiny.model->config();
  constexpr int kPrompts = 15;
  std::vector<GenerationRequest> requests(kPrompts);
  for (int p = 0; p < kPrompts; ++p) {
    for (int i = 0; i < 160; ++i) requests[p].prompt.push_back(3 + (i * 13 + p * 101) % 180);
    requests[p].max_new_tokens = 2;
  }
  std::vector<control::LoadReport> decode_reports;
  std::vector<control::LoadReport> prefill_reports;
  asio::io_context io;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        std::map<uint64_t, std::vector<control::TokenChunk>> chunks;
        control::Hello decode_hello;
        auto decode = co_await greet(decode_node.port, tiny.fingerprint, &chunks, &decode_hello, &decode_reports);
        control::Hello prefill_hello;
        auto prefill = co_await greet(prefill_node.port, tiny.fingerprint, nullptr, &prefill_hello, &prefill_reports);
        Driver driver(prefill, decode, decode_hello, prefill_hello, chunks, config.entity_adaptor->entity_token_id,
                      config.entity_adaptor->entity_dim);
        asio::steady_timer wait(io);
        // The first reports (the whole, still empty, index) before any call: the calls then arrive as changes.
        for (int i = 0; i < 100 && (decode_reports.empty() || prefill_reports.empty()); ++i) {
          wait.expires_after(milliseconds(50));
          co_await wait.async_wait(asio::use_awaitable);
        }
        for (const GenerationRequest& request : requests) {
          CallResult result = co_await driver.run(request);
          REQUIRE(result.tokens.size() == 2);
        }
        // Two more rounds of reports (one a second) carry the last changes.
        const size_t decode_seen = decode_reports.size();
        const size_t prefill_seen = prefill_reports.size();
        for (int i = 0;
             i < 100 && (decode_reports.size() < decode_seen + 2 || prefill_reports.size() < prefill_seen + 2); ++i) {
          wait.expires_after(milliseconds(50));
          co_await wait.async_wait(asio::use_awaitable);
        }
        decode->close(Status::ok());
        prefill->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(120));
  REQUIRE(finished);
  for (const auto* reports : {&decode_reports, &prefill_reports}) {
    const std::string node = reports == &decode_reports ? "decode" : "prefill";
    INFO(node << " node, " << reports->size() << " reports");
    REQUIRE(reports->size() >= 3);
    CHECK(reports->front().prefix_blocks_snapshot());
    CHECK(reports->front().prefix_blocks_added_size() == 0);
    for (size_t i = 1; i < reports->size(); ++i) CHECK_FALSE((*reports)[i].prefix_blocks_snapshot());
    const std::unordered_set<uint64_t> index = replay(*reports);
    CHECK(index.size() <= 128);
    for (uint64_t hash : full_block_hashes(requests.back().prompt)) CHECK(index.count(hash) == 1);
    for (uint64_t hash : full_block_hashes(requests.front().prompt)) CHECK(index.count(hash) == 0);
  }
}

}  // namespace
}  // namespace recgpt::testing
