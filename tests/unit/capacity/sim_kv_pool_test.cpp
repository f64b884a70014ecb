// The simulated KV pools: prefixes are shared and counted once, cached blocks are evicted oldest first only
// when room is needed, a reservation that cannot fit takes nothing, and releasing returns every block.
#include "capacity/sim_kv_pool.h"

#include <catch2/catch.hpp>
#include <vector>

namespace recgpt::capacity {
namespace {

TEST_CASE("a pool shares held prefixes and returns every block on release", "[capacity][kv]") {
  SimKvPool pool(10);
  const std::vector<uint64_t> first{1, 2, 3};
  const std::vector<uint64_t> second{1, 2, 4};
  SimKvPool::Reservation a, b;
  REQUIRE(pool.reserve(first, 5, a));  // 3 hashed + 2 private
  CHECK(a.held_blocks == 0);
  CHECK(a.private_blocks == 2);
  CHECK(pool.used_blocks() == 5);
  REQUIRE(pool.reserve(second, 4, b));  // shares 1, 2; adds 4 and one private block
  CHECK(b.held_blocks == 2);
  CHECK(pool.used_blocks() == 5 + 2);
  CHECK(pool.held_prefix(std::vector<uint64_t>{1, 2, 3, 9}) == 3);
  pool.release(first, a);
  CHECK(pool.used_blocks() == 4);    // 1, 2, 4 and b's private block
  CHECK(pool.cached_blocks() == 1);  // 3 stays cached
  CHECK(pool.held_prefix(first) == 3);
  pool.release(second, b);
  CHECK(pool.used_blocks() == 0);
  CHECK(pool.cached_blocks() == 4);
}

TEST_CASE("a pool evicts cached blocks oldest first and refuses what cannot fit", "[capacity][kv]") {
  SimKvPool pool(4);
  const std::vector<uint64_t> old_prompt{1, 2};
  const std::vector<uint64_t> newer_prompt{3, 4};
  SimKvPool::Reservation r;
  REQUIRE(pool.reserve(old_prompt, 2, r));
  pool.release(old_prompt, r);
  REQUIRE(pool.reserve(newer_prompt, 2, r));
  pool.release(newer_prompt, r);
  CHECK(pool.cached_blocks() == 4);
  SimKvPool::Reservation fresh;
  REQUIRE(pool.reserve(std::vector<uint64_t>{}, 2, fresh));  // two private blocks: evicts 1 and 2
  CHECK(pool.held_prefix(old_prompt) == 0);
  CHECK(pool.held_prefix(newer_prompt) == 2);
  SimKvPool::Reservation too_big;
  CHECK_FALSE(pool.reserve(std::vector<uint64_t>{7}, 3, too_big));  // only 2 blocks can be freed
  CHECK(pool.used_blocks() == 2);
  CHECK(pool.held_prefix(newer_prompt) == 2);  // a refusal evicts nothing
  // Reusing a cached prefix needs room only for the rest.
  SimKvPool::Reservation reuse;
  REQUIRE(pool.reserve(newer_prompt, 2, reuse));
  CHECK(reuse.held_blocks == 2);
  CHECK(pool.used_blocks() == 4);
}

TEST_CASE("an LRU hash set keeps the most recently touched hashes", "[capacity][kv]") {
  LruHashSet cache(3);
  cache.touch(std::vector<uint64_t>{1, 2, 3});
  cache.touch(std::vector<uint64_t>{1});
  cache.touch(std::vector<uint64_t>{4});  // evicts 2, the least recently used
  CHECK(cache.held_prefix(std::vector<uint64_t>{1, 2}) == 1);
  CHECK(cache.hashes().count(3) == 1);
  CHECK(cache.hashes().count(4) == 1);
  CHECK(cache.hashes().size() == 3);
}

}  // namespace
}  // namespace recgpt::capacity
