#include "engine/block_hash.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace recgpt {
namespace {

TEST_CASE("xxhash64 matches the reference implementation's published values") {
  CHECK(xxhash64(std::string_view(""), 0) == 0xEF46DB3751D8E999ull);
  CHECK(xxhash64(std::string_view("a"), 0) == 0xD24EC4F1A98C6E5Bull);
  CHECK(xxhash64(std::string_view("abc"), 0) == 0x44BC2CF5AD770999ull);
  CHECK(xxhash64(std::string_view("xxhash"), 0) == 0x32DD38952C4BC720ull);
  CHECK(xxhash64(std::string_view("xxhash"), 20141025) == 0xB559B98D844E0635ull);
  // 39 bytes: exercises the 32-byte stripe loop and every tail path.
  CHECK(xxhash64(std::string_view("Nobody inspects the spammish repetition"), 0) == 0xFBCEA83C8A378BF1ull);
}

TEST_CASE("block hashes are pinned: changing them breaks routers and engines of other versions") {
  // Values from an independent Python implementation of the algorithm in block_hash.h.
  std::vector<int32_t> tokens(32);
  for (int i = 0; i < 32; ++i) tokens[i] = i * 1000 - 7;
  std::vector<uint64_t> hashes = compute_block_hashes(tokens, {}, 16);
  REQUIRE(hashes.size() == 2);
  CHECK(hashes[0] == 0xC44917B590E35D47ull);
  CHECK(hashes[1] == 0x2EBB97EE1DBE7507ull);
  CHECK(entity_key_from_id("item-42") == 0x3410C4354855372Eull);
  std::vector<float> vector = {0.5f, -1.0f, 3.25f};
  CHECK(entity_key_from_vector(vector) == 0xC313F5C7BF7B77CDull);
}

TEST_CASE("one hash per full block, a partial tail block is not hashed") {
  std::vector<int32_t> tokens(50, 7);
  CHECK(compute_block_hashes(tokens, {}, 16).size() == 3);
  CHECK(compute_block_hashes(std::span<const int32_t>(tokens).first(15), {}, 16).empty());
  CHECK(compute_block_hashes({}, {}, 16).empty());
}

TEST_CASE("block hash i depends on every token of blocks 0..i and on nothing after") {
  std::vector<int32_t> tokens(64);
  for (int i = 0; i < 64; ++i) tokens[i] = i;
  std::vector<uint64_t> base = compute_block_hashes(tokens, {}, 16);

  std::vector<int32_t> changed_first = tokens;
  changed_first[3] = 999;
  std::vector<uint64_t> first = compute_block_hashes(changed_first, {}, 16);
  for (int i = 0; i < 4; ++i) CHECK(first[i] != base[i]);

  std::vector<int32_t> changed_third = tokens;
  changed_third[40] = 999;
  std::vector<uint64_t> third = compute_block_hashes(changed_third, {}, 16);
  CHECK(third[0] == base[0]);
  CHECK(third[1] == base[1]);
  CHECK(third[2] != base[2]);
  CHECK(third[3] != base[3]);
}

TEST_CASE("a shared prefix gives shared leading hashes whatever follows") {
  std::vector<int32_t> context(32, 11);
  std::vector<int32_t> planner = context;
  std::vector<int32_t> expert = context;
  planner.insert(planner.end(), 16, 1);
  expert.insert(expert.end(), 16, 2);
  auto planner_hashes = compute_block_hashes(planner, {}, 16);
  auto expert_hashes = compute_block_hashes(expert, {}, 16);
  CHECK(planner_hashes[0] == expert_hashes[0]);
  CHECK(planner_hashes[1] == expert_hashes[1]);
  CHECK(planner_hashes[2] != expert_hashes[2]);
}

TEST_CASE("entity keys distinguish blocks with equal token ids, all-zero keys equal no keys") {
  std::vector<int32_t> tokens(16, 5);
  std::vector<uint64_t> zero_keys(16, 0);
  CHECK(compute_block_hashes(tokens, zero_keys, 16) == compute_block_hashes(tokens, {}, 16));

  std::vector<uint64_t> item_a(16, 0);
  std::vector<uint64_t> item_b(16, 0);
  item_a[4] = entity_key_from_id("item-a");
  item_b[4] = entity_key_from_id("item-b");
  CHECK(compute_block_hashes(tokens, item_a, 16) != compute_block_hashes(tokens, item_b, 16));
  CHECK(compute_block_hashes(tokens, item_a, 16) != compute_block_hashes(tokens, {}, 16));
}

TEST_CASE("hash_block continues a chain exactly as compute_block_hashes does") {
  std::vector<int32_t> tokens(48);
  for (int i = 0; i < 48; ++i) tokens[i] = 3 * i;
  auto hashes = compute_block_hashes(tokens, {}, 16);
  std::span<const int32_t> all(tokens);
  CHECK(hash_block(0, all.first(16), {}) == hashes[0]);
  CHECK(hash_block(hashes[1], all.subspan(32, 16), {}) == hashes[2]);
}

TEST_CASE("entity keys are never zero and treat -0 as +0") {
  CHECK(entity_key_from_id("") != 0);
  CHECK(entity_key_from_id("a") != entity_key_from_id("b"));
  std::vector<float> positive_zero = {0.0f, 1.0f};
  std::vector<float> negative_zero = {-0.0f, 1.0f};
  CHECK(entity_key_from_vector(positive_zero) == entity_key_from_vector(negative_zero));
  std::vector<float> other = {0.0f, 1.5f};
  CHECK(entity_key_from_vector(positive_zero) != entity_key_from_vector(other));
  CHECK(entity_key_from_vector({}) != 0);
}

}  // namespace
}  // namespace recgpt
