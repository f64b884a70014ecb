#include "kv_transfer/kv_layout.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/kv_cache.h"

namespace recgpt::kv {
namespace {

KvLayoutDescription small_layout(int64_t num_blocks) {
  KvLayoutDescription layout;
  layout.num_layers = 3;
  layout.num_kv_heads = 2;
  layout.head_dim = 8;
  layout.block_size = 4;
  layout.dtype = "bf16";
  layout.num_blocks = num_blocks;
  layout.array_stride_bytes = static_cast<uint64_t>(num_blocks) * layout.block_bytes() + 64;  // padded
  return layout;
}

// Applies copies to byte arrays, as a transfer would.
void apply(const std::vector<BlockCopy>& copies, const std::vector<uint8_t>& source,
           std::vector<uint8_t>& destination) {
  for (const BlockCopy& copy : copies) {
    REQUIRE(copy.source_offset + copy.length <= source.size());
    REQUIRE(copy.destination_offset + copy.length <= destination.size());
    std::memcpy(destination.data() + copy.destination_offset, source.data() + copy.source_offset, copy.length);
  }
}

}  // namespace

TEST_CASE("KV layout of the engine's cache is what the description says", "[kv_transfer][layout]") {
  KvCacheConfig config;
  config.num_layers = 3;
  config.num_kv_heads = 2;
  config.head_dim = 16;
  config.block_size = 8;
  config.dtype = DType::kBF16;
  config.num_blocks = 5;
  Result<KvCache> cache = KvCache::create(config);
  REQUIRE(cache.is_ok());
  KvLayoutDescription layout{3, 2, 16, 8, "bf16", 5, cache.value().array_stride_bytes()};
  REQUIRE(validate_layout(layout).is_ok());
  CHECK(layout.block_bytes() == config.block_bytes_per_layer());
  CHECK(layout.region_bytes() <= cache.value().storage_bytes());
  auto* base = static_cast<std::byte*>(cache.value().storage_data());
  for (int layer = 0; layer < 3; ++layer) {
    CHECK(static_cast<std::byte*>(cache.value().key_data(layer)) == base + 2 * layer * layout.array_stride_bytes);
    CHECK(static_cast<std::byte*>(cache.value().value_data(layer)) ==
          base + (2 * layer + 1) * layout.array_stride_bytes);
  }
}

TEST_CASE("KV layout copies coalesce runs adjacent on both sides", "[kv_transfer][layout]") {
  KvLayoutDescription source = small_layout(10);
  KvLayoutDescription destination = small_layout(20);
  const uint64_t block = source.block_bytes();
  std::vector<int32_t> from = {2, 3, 4, 7, 8, 0};
  std::vector<int32_t> to = {10, 11, 12, 5, 9, 1};
  Result<std::vector<BlockCopy>> copies = layer_copies(source, from, destination, to, 1);
  REQUIRE(copies.is_ok());
  // K: [2..4]->[10..12] as one, 7->5, 8->9 (not adjacent at the destination), 0->1; then the same for V.
  const uint64_t sk = 2 * source.array_stride_bytes, dk = 2 * destination.array_stride_bytes;
  const uint64_t sv = 3 * source.array_stride_bytes, dv = 3 * destination.array_stride_bytes;
  std::vector<BlockCopy> expected = {
      {sk + 2 * block, dk + 10 * block, 3 * block}, {sk + 7 * block, dk + 5 * block, block},
      {sk + 8 * block, dk + 9 * block, block},      {sk + 0 * block, dk + 1 * block, block},
      {sv + 2 * block, dv + 10 * block, 3 * block}, {sv + 7 * block, dv + 5 * block, block},
      {sv + 8 * block, dv + 9 * block, block},      {sv + 0 * block, dv + 1 * block, block},
  };
  CHECK(copies.value() == expected);
}

TEST_CASE("KV layout copies move exactly the mapped blocks of every layer", "[kv_transfer][layout]") {
  // Of the last block, only its first rows when asked (a prompt's partial last block).
  const int last_block_tokens = GENERATE(0, 1, 3, 4);
  CAPTURE(last_block_tokens);
  KvLayoutDescription source = small_layout(32);
  KvLayoutDescription destination = small_layout(48);
  std::mt19937 random(7);
  std::vector<uint8_t> source_bytes(source.region_bytes());
  for (uint8_t& byte : source_bytes) byte = static_cast<uint8_t>(random());
  std::vector<int32_t> source_ids(32), destination_ids(48);
  for (int i = 0; i < 32; ++i) source_ids[i] = i;
  for (int i = 0; i < 48; ++i) destination_ids[i] = i;
  std::shuffle(source_ids.begin(), source_ids.end(), random);
  std::shuffle(destination_ids.begin(), destination_ids.end(), random);
  source_ids.resize(20);
  destination_ids.resize(20);
  std::sort(source_ids.begin(), source_ids.begin() + 10);  // some runs to coalesce
  std::sort(destination_ids.begin(), destination_ids.begin() + 10);

  std::vector<uint8_t> destination_bytes(destination.region_bytes(), 0);
  for (int layer = 0; layer < source.num_layers; ++layer) {
    Result<std::vector<BlockCopy>> copies =
        layer_copies(source, source_ids, destination, destination_ids, layer, last_block_tokens);
    REQUIRE(copies.is_ok());
    apply(copies.value(), source_bytes, destination_bytes);
  }
  const uint64_t block = source.block_bytes();
  const uint64_t last_block = last_block_tokens == 0 ? block : block / source.block_size * last_block_tokens;
  std::vector<bool> written(destination.region_bytes(), false);
  for (int layer = 0; layer < source.num_layers; ++layer) {
    for (int array = 0; array < 2; ++array) {
      for (size_t i = 0; i < source_ids.size(); ++i) {
        uint64_t from = (2 * layer + array) * source.array_stride_bytes + source_ids[i] * block;
        uint64_t to = (2 * layer + array) * destination.array_stride_bytes + destination_ids[i] * block;
        const uint64_t length = i + 1 == source_ids.size() ? last_block : block;
        REQUIRE(std::memcmp(destination_bytes.data() + to, source_bytes.data() + from, length) == 0);
        std::fill(written.begin() + to, written.begin() + to + length, true);
      }
    }
  }
  for (size_t i = 0; i < destination_bytes.size(); ++i) {
    if (!written[i]) REQUIRE(destination_bytes[i] == 0);  // nothing else was touched
  }
}

TEST_CASE("KV layout refuses bad ids, lengths and layers", "[kv_transfer][layout]") {
  KvLayoutDescription layout = small_layout(4);
  std::vector<int32_t> ok = {0, 1};
  std::vector<int32_t> out_of_range = {0, 4};
  std::vector<int32_t> negative = {-1, 0};
  std::vector<int32_t> shorter = {0};
  CHECK(layer_copies(layout, ok, layout, out_of_range, 0).status().message().find("destination block id 4") !=
        std::string::npos);
  CHECK(layer_copies(layout, negative, layout, ok, 0).status().message().find("source block id -1") !=
        std::string::npos);
  CHECK(layer_copies(layout, ok, layout, shorter, 0).status().code() == StatusCode::kInvalidArgument);
  CHECK(layer_copies(layout, ok, layout, ok, 3).status().message().find("layer 3") != std::string::npos);
  CHECK(layer_copies(layout, ok, layout, ok, -1).status().code() == StatusCode::kInvalidArgument);
  CHECK(layer_copies(layout, {}, layout, {}, 0).value().empty());
  CHECK(layer_copies(layout, ok, layout, ok, 0, 5).status().message().find("last_block_tokens 5") != std::string::npos);
  CHECK(layer_copies(layout, ok, layout, ok, 0, -1).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("KV layouts that differ are refused naming the field", "[kv_transfer][layout]") {
  KvLayoutDescription here = small_layout(8);
  CHECK(check_layouts_match(here, small_layout(100)).is_ok());  // pool sizes may differ
  auto mismatch = [&](auto change) {
    KvLayoutDescription there = here;
    change(there);
    return check_layouts_match(here, there).message();
  };
  CHECK(mismatch([](auto& l) { l.block_size = 16; }) == "KV layouts differ in block_size: 4 here, 16 at the peer");
  CHECK(mismatch([](auto& l) { l.dtype = "f32"; }) == "KV layouts differ in dtype: bf16 here, f32 at the peer");
  CHECK(mismatch([](auto& l) { l.num_kv_heads = 4; }).find("num_kv_heads") != std::string::npos);
  CHECK(mismatch([](auto& l) { l.head_dim = 16; }).find("head_dim") != std::string::npos);
  CHECK(mismatch([](auto& l) { l.num_layers = 2; }).find("num_layers") != std::string::npos);
  CHECK(mismatch([](auto& l) { l.key_scale = 0.5f; }).empty());  // scales mean nothing for bf16

  // FP8: the same bytes are other values under another scale.
  here.dtype = "fp8_e4m3";
  here.array_stride_bytes = here.num_blocks * here.block_bytes();
  CHECK(check_layouts_match(here, here).is_ok());
  CHECK(mismatch([](auto& l) { l.key_scale = 0.5f; }) ==
        "KV layouts differ in key_scale: 1.000000 here, 0.500000 at the peer");
  CHECK(mismatch([](auto& l) { l.value_scale = 2.0f; }).find("value_scale") != std::string::npos);
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    KvLayoutDescription broken = here;
    broken.key_scale = bad;
    broken.value_scale = bad;
    CHECK_THAT(validate_layout(broken).message(), Catch::Contains("key_scale must be positive and finite"));
  }
}

TEST_CASE("KV layout validation names the bad field", "[kv_transfer][layout]") {
  auto message = [](auto change) {
    KvLayoutDescription layout = small_layout(8);
    change(layout);
    return validate_layout(layout).message();
  };
  CHECK(validate_layout(small_layout(8)).is_ok());
  CHECK(message([](auto& l) { l.head_dim = 0; }).find("head_dim") != std::string::npos);
  CHECK(message([](auto& l) { l.dtype = "f64"; }).find("dtype 'f64'") != std::string::npos);
  CHECK(message([](auto& l) { l.num_blocks = int64_t{1} << 40; }).find("num_blocks") != std::string::npos);
  CHECK(message([](auto& l) { l.array_stride_bytes = 1; }).find("array_stride_bytes") != std::string::npos);
  CHECK(message([](auto& l) {
          l.num_kv_heads = 1 << 30;
          l.head_dim = 1 << 30;
        }).find("overflow") != std::string::npos);
}

}  // namespace recgpt::kv
