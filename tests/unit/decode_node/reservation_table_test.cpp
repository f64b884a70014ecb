// The decode node's reservations over a real BlockManager: sizes, prefix reuse, no room, cancel, expiry, and a
// randomised run after which every block is back.
#include "decode_node/reservation_table.h"

#include <catch2/catch.hpp>
#include <random>
#include <vector>

namespace recgpt::decode {
namespace {

constexpr int kBlockSize = 16;
const Clock::time_point kFarAway = Clock::now() + std::chrono::hours(1);

ReservationRequest request(int64_t prompt, int64_t budget, std::span<const uint64_t> hashes = {},
                           Clock::time_point expires = kFarAway) {
  return {prompt, budget, hashes, expires};
}

// Leaves `hashes` cached in the pool, as a finished sequence would.
void cache_prefix(BlockManager& blocks, std::span<const uint64_t> hashes) {
  auto taken = blocks.allocate(static_cast<int64_t>(hashes.size()));
  REQUIRE(taken.is_ok());
  for (size_t i = 0; i < hashes.size(); ++i) REQUIRE(blocks.register_block(hashes[i], (*taken)[i]));
  blocks.release(*taken);
}

TEST_CASE("a reservation holds blocks for the prompt and its decode budget until taken", "[decode][reservation]") {
  BlockManager blocks(64);
  ReservationTable table(blocks, kBlockSize);
  auto reserved = table.reserve(request(40, 10));  // 50 tokens -> 4 blocks
  REQUIRE(reserved.is_ok());
  CHECK(reserved->blocks.size() == 4);
  CHECK(reserved->cached_tokens == 0);
  CHECK(table.reserved_blocks() == 4);
  CHECK(blocks.num_used_blocks() == 4);
  auto taken = table.take(reserved->id);
  REQUIRE(taken.is_ok());
  CHECK(taken->blocks == reserved->blocks);
  CHECK(table.reserved_blocks() == 0);
  CHECK(blocks.num_used_blocks() == 4);  // the running sequence holds them now
  CHECK(table.take(reserved->id).status().code() == StatusCode::kNotFound);
  blocks.release(taken->blocks);
  CHECK(blocks.num_free_blocks() == 64);
}

TEST_CASE("a reservation reuses the cached prefix and leaves the prompt's last token to compute",
          "[decode][reservation]") {
  BlockManager blocks(64);
  ReservationTable table(blocks, kBlockSize);
  const std::vector<uint64_t> hashes = {11, 22, 33};
  cache_prefix(blocks, hashes);
  std::vector<int32_t> cached_ids;
  {
    PrefixMatch probe = blocks.match_prefix(hashes);
    cached_ids = probe.blocks;
    blocks.release(probe.blocks);
  }

  auto longer = table.reserve(request(60, 4, hashes));  // 3 full blocks cached, 12 more prompt tokens
  REQUIRE(longer.is_ok());
  CHECK(longer->cached_tokens == 48);
  CHECK(std::vector<int32_t>(longer->blocks.begin(), longer->blocks.begin() + 3) == cached_ids);
  CHECK(longer->blocks.size() == 4);  // 64 tokens
  CHECK(longer->blocks_to_fill(kBlockSize).size() == 1);

  // A prompt that is exactly the cached blocks: its last block is computed again, into a fresh block.
  auto exact = table.reserve(request(48, 0, hashes));
  REQUIRE(exact.is_ok());
  CHECK(exact->cached_tokens == 32);
  CHECK(exact->blocks[0] == cached_ids[0]);
  CHECK(exact->blocks[1] == cached_ids[1]);
  CHECK(exact->blocks[2] != cached_ids[2]);
  REQUIRE(blocks.check_invariants().is_ok());
}

TEST_CASE("no room is refused at once with the counts, and changes nothing", "[decode][reservation]") {
  BlockManager blocks(8);
  ReservationTable table(blocks, kBlockSize);
  const std::vector<uint64_t> hashes = {5};
  cache_prefix(blocks, hashes);
  REQUIRE(table.reserve(request(90, 0)).is_ok());  // 6 blocks (the cached one may be evicted: 7 available)
  const int64_t used = blocks.num_used_blocks();
  const int64_t available = blocks.num_available_blocks();
  auto refused = table.reserve(request(40, 20, hashes));
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK_THAT(refused.status().message(), Catch::Contains("no room"));
  CHECK(blocks.num_used_blocks() == used);
  CHECK(blocks.num_available_blocks() == available);
  CHECK(table.size() == 1);
  CHECK(table.reserve(request(1000, 0)).status().code() == StatusCode::kResourceExhausted);
  CHECK(table.reserve(request(0, 5)).status().code() == StatusCode::kInvalidArgument);
  const std::vector<uint64_t> too_many = {1, 2, 3};
  CHECK(table.reserve(request(20, 0, too_many)).status().code() == StatusCode::kInvalidArgument);
  REQUIRE(blocks.check_invariants().is_ok());
}

TEST_CASE("cancel and expiry return every block of a reservation, once", "[decode][reservation]") {
  BlockManager blocks(32);
  ReservationTable table(blocks, kBlockSize);
  const auto now = Clock::now();
  auto early = table.reserve(request(30, 2, {}, now + std::chrono::milliseconds(10)));
  auto late = table.reserve(request(30, 2, {}, now + std::chrono::seconds(10)));
  auto cancelled = table.reserve(request(30, 2));
  REQUIRE(early.is_ok());
  REQUIRE(late.is_ok());
  REQUIRE(cancelled.is_ok());
  CHECK(table.next_expiry() == early->expires);
  REQUIRE(table.cancel(cancelled->id).is_ok());
  CHECK(table.cancel(cancelled->id).code() == StatusCode::kNotFound);
  CHECK(table.expire(now + std::chrono::seconds(1)) == std::vector<uint64_t>{early->id});
  CHECK(table.take(early->id).status().code() == StatusCode::kNotFound);
  CHECK(table.size() == 1);
  CHECK(table.reserved_blocks() == 2);
  CHECK(blocks.num_used_blocks() == 2);
}

TEST_CASE("after a randomised run of reserves, takes, cancels and expiries every block is back",
          "[decode][reservation]") {
  BlockManager blocks(96);
  std::mt19937_64 random(20261203);
  std::vector<std::vector<int32_t>> running;
  {
    ReservationTable table(blocks, kBlockSize);
    std::vector<uint64_t> live;
    Clock::time_point now = Clock::now();
    const std::vector<uint64_t> shared = {101, 202, 303, 404};
    for (int step = 0; step < 500; ++step) {
      now += std::chrono::milliseconds(1);
      const int action = static_cast<int>(random() % 6);
      if (action <= 2) {
        const int64_t prompt = 1 + static_cast<int64_t>(random() % 80);
        const size_t hashes = std::min<size_t>(shared.size(), static_cast<size_t>(prompt / kBlockSize));
        auto reserved =
            table.reserve(request(prompt, static_cast<int64_t>(random() % 40), std::span(shared).first(hashes),
                                  now + std::chrono::milliseconds(random() % 50)));
        if (reserved.is_ok()) live.push_back(reserved->id);
      } else if (action == 3 && !live.empty()) {
        const size_t pick = random() % live.size();
        (void)table.cancel(live[pick]);
        live.erase(live.begin() + static_cast<long>(pick));
      } else if (action == 4 && !live.empty()) {
        const size_t pick = random() % live.size();
        auto taken = table.take(live[pick]);
        live.erase(live.begin() + static_cast<long>(pick));
        if (!taken.is_ok()) continue;  // it had expired
        // A finished sequence registers its full prompt blocks, as the engine does.
        for (int64_t i = 0; i < taken->prompt_tokens / kBlockSize && i < static_cast<int64_t>(shared.size()); ++i) {
          (void)blocks.register_block(shared[static_cast<size_t>(i)], taken->blocks[static_cast<size_t>(i)]);
        }
        running.push_back(std::move(taken->blocks));
      } else {
        table.expire(now);
      }
      if (running.size() > 3) {
        blocks.release(running.front());
        running.erase(running.begin());
      }
      REQUIRE(blocks.check_invariants().is_ok());
    }
  }  // the table returns what is still reserved
  for (const auto& sequence : running) blocks.release(sequence);
  CHECK(blocks.num_used_blocks() == 0);
  CHECK(blocks.num_available_blocks() == 96);
  REQUIRE(blocks.check_invariants().is_ok());
}

}  // namespace
}  // namespace recgpt::decode
