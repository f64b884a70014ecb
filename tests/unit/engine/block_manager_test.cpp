#include "engine/block_manager.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <set>
#include <vector>

namespace recgpt {
namespace {

void require_consistent(const BlockManager& manager) {
  Status status = manager.check_invariants();
  INFO(status.to_string());
  REQUIRE(status.is_ok());
  REQUIRE(manager.num_free_blocks() + manager.num_cached_blocks() + manager.num_used_blocks() == manager.num_blocks());
}

TEST_CASE("allocation beyond the pool is kResourceExhausted naming the counts, and frees nothing") {
  BlockManager manager(8);
  auto held = manager.allocate(6);
  REQUIRE(held.is_ok());
  auto too_many = manager.allocate(3);
  REQUIRE_FALSE(too_many.is_ok());
  CHECK(too_many.status().code() == StatusCode::kResourceExhausted);
  CHECK_THAT(too_many.status().message(), Catch::Contains("requested 3") && Catch::Contains("2 available"));
  CHECK(manager.num_free_blocks() == 2);
  CHECK(manager.num_used_blocks() == 6);
  require_consistent(manager);

  CHECK(manager.allocate(-1).status().code() == StatusCode::kInvalidArgument);
  auto none = manager.allocate(0);
  REQUIRE(none.is_ok());
  CHECK(none->empty());
}

TEST_CASE("allocated blocks are distinct and return to free when an unregistered sequence releases them") {
  BlockManager manager(4);
  auto blocks = manager.allocate(4);
  REQUIRE(blocks.is_ok());
  std::set<int32_t> distinct(blocks->begin(), blocks->end());
  CHECK(distinct.size() == 4);
  CHECK(manager.num_free_blocks() == 0);
  manager.release(*blocks);
  CHECK(manager.num_free_blocks() == 4);
  CHECK(manager.num_cached_blocks() == 0);
  require_consistent(manager);
}

TEST_CASE("two sequences with a common prefix share its blocks and their ref counts") {
  BlockManager manager(16);
  const std::vector<uint64_t> first_hashes = {101, 102, 103};
  auto first = manager.allocate(3);
  REQUIRE(first.is_ok());
  for (size_t i = 0; i < 3; ++i) CHECK(manager.register_block(first_hashes[i], (*first)[i]));

  const std::vector<uint64_t> second_hashes = {101, 102, 999};
  PrefixMatch match = manager.match_prefix(second_hashes);
  REQUIRE(match.num_blocks() == 2);
  CHECK(match.blocks[0] == (*first)[0]);
  CHECK(match.blocks[1] == (*first)[1]);
  CHECK(manager.ref_count((*first)[0]) == 2);
  CHECK(manager.ref_count((*first)[2]) == 1);
  CHECK(manager.num_queried_blocks() == 3);
  CHECK(manager.num_hit_blocks() == 2);

  manager.release(*first);
  CHECK(manager.ref_count(match.blocks[0]) == 1);
  CHECK(manager.num_cached_blocks() == 1);  // block 3 of the first sequence: registered, unreferenced
  manager.release(match.blocks);
  CHECK(manager.num_cached_blocks() == 3);
  CHECK(manager.num_used_blocks() == 0);
  require_consistent(manager);

  // A third sequence revives the cached blocks.
  PrefixMatch revived = manager.match_prefix(first_hashes);
  CHECK(revived.blocks == *first);
  CHECK(manager.num_cached_blocks() == 0);
  require_consistent(manager);
}

TEST_CASE("a duplicate hash keeps the first block, the second stays unregistered and becomes free") {
  BlockManager manager(4);
  auto blocks = manager.allocate(2);
  REQUIRE(blocks.is_ok());
  CHECK(manager.register_block(7, (*blocks)[0]));
  CHECK_FALSE(manager.register_block(7, (*blocks)[1]));
  CHECK(manager.register_block(7, (*blocks)[0]));  // idempotent
  CHECK_FALSE(manager.is_registered((*blocks)[1]));
  manager.release(*blocks);
  CHECK(manager.num_cached_blocks() == 1);
  CHECK(manager.num_free_blocks() == 3);
  CHECK(manager.match_prefix(std::vector<uint64_t>{7}).blocks == std::vector<int32_t>{(*blocks)[0]});
  require_consistent(manager);
}

TEST_CASE("allocation evicts cached blocks least recently released first, after free ones") {
  BlockManager manager(4);
  auto blocks = manager.allocate(4);
  REQUIRE(blocks.is_ok());
  for (int i = 0; i < 4; ++i) REQUIRE(manager.register_block(1000 + i, (*blocks)[i]));
  // Release order 2, 0, 3, 1: so LRU order is 2 (oldest), 0, 3, 1.
  for (int i : {2, 0, 3, 1}) manager.release((*blocks)[i]);
  CHECK(manager.num_cached_blocks() == 4);

  auto first = manager.allocate(1);
  REQUIRE(first.is_ok());
  CHECK(first->front() == (*blocks)[2]);
  CHECK(manager.match_prefix(std::vector<uint64_t>{1002}).num_blocks() == 0);

  // Touching block 0 via a match makes it most recent once released again.
  PrefixMatch touched = manager.match_prefix(std::vector<uint64_t>{1000});
  REQUIRE(touched.num_blocks() == 1);
  manager.release(touched.blocks);
  auto next = manager.allocate(2);
  REQUIRE(next.is_ok());
  CHECK(*next == std::vector<int32_t>{(*blocks)[3], (*blocks)[1]});
  CHECK(manager.num_evicted_blocks() == 3);
  require_consistent(manager);
}

TEST_CASE("releasing a sequence's blocks together keeps its prefix cached longest") {
  BlockManager manager(3);
  auto blocks = manager.allocate(3);
  REQUIRE(blocks.is_ok());
  for (int i = 0; i < 3; ++i) REQUIRE(manager.register_block(50 + i, (*blocks)[i]));
  manager.release(*blocks);
  auto one = manager.allocate(1);
  REQUIRE(one.is_ok());
  CHECK(one->front() == (*blocks)[2]);  // the tail goes first
  CHECK(manager.match_prefix(std::vector<uint64_t>{50, 51, 52}).num_blocks() == 2);
}

// A reference model: ref counts and the index as plain maps.
struct ModelState {
  std::map<int32_t, int> ref_counts;
  std::map<uint64_t, int32_t> index;
};

TEST_CASE("random allocate / register / match / release keeps every invariant and matches a model") {
  constexpr int kNumBlocks = 64;
  BlockManager manager(kNumBlocks);
  ModelState model;
  std::mt19937 random(1234);
  std::vector<std::vector<int32_t>> sequences;  // blocks each live sequence holds
  uint64_t next_hash = 1;

  for (int step = 0; step < 20000; ++step) {
    int action = std::uniform_int_distribution<int>(0, 9)(random);
    if (action < 4) {
      int count = std::uniform_int_distribution<int>(0, 12)(random);
      int64_t available = manager.num_available_blocks();
      auto blocks = manager.allocate(count);
      REQUIRE(blocks.is_ok() == (count <= available));
      if (!blocks.is_ok()) continue;
      for (int32_t block : *blocks) {
        REQUIRE(model.ref_counts[block] == 0);
        // An evicted block leaves the index.
        for (auto it = model.index.begin(); it != model.index.end(); ++it) {
          if (it->second == block) {
            model.index.erase(it);
            break;
          }
        }
        model.ref_counts[block] = 1;
      }
      sequences.push_back(*blocks);
    } else if (action < 6 && !sequences.empty()) {
      auto& blocks = sequences[random() % sequences.size()];
      if (blocks.empty()) continue;
      int32_t block = blocks[random() % blocks.size()];
      // Small hash space, so duplicates happen.
      uint64_t hash = random() % 2 == 0 ? next_hash++ : 1 + random() % next_hash;
      bool already = false;
      for (const auto& [indexed_hash, indexed_block] : model.index) already |= indexed_block == block;
      if (already) continue;
      bool expected = model.index.emplace(hash, block).second;
      REQUIRE(manager.register_block(hash, block) == expected);
    } else if (action < 8 && !sequences.empty()) {
      size_t which = random() % sequences.size();
      manager.release(sequences[which]);
      for (int32_t block : sequences[which]) --model.ref_counts[block];
      sequences.erase(sequences.begin() + static_cast<std::ptrdiff_t>(which));
    } else {
      std::vector<uint64_t> query;
      for (int i = 0; i < 4; ++i) query.push_back(1 + random() % (next_hash + 1));
      std::vector<int32_t> expected;
      for (uint64_t hash : query) {
        auto found = model.index.find(hash);
        if (found == model.index.end()) break;
        expected.push_back(found->second);
      }
      PrefixMatch match = manager.match_prefix(query);
      REQUIRE(match.blocks == expected);
      for (int32_t block : match.blocks) ++model.ref_counts[block];
      sequences.push_back(match.blocks);
    }
    if (step % 97 == 0) require_consistent(manager);
    int64_t used = 0;
    for (const auto& [block, count] : model.ref_counts) used += count > 0;
    REQUIRE(manager.num_used_blocks() == used);
  }
  for (const auto& blocks : sequences) manager.release(blocks);
  require_consistent(manager);
  CHECK(manager.num_used_blocks() == 0);
  CHECK(manager.num_cached_blocks() == static_cast<int64_t>(model.index.size()));
}

}  // namespace
}  // namespace recgpt
