#include "engine/kv_cache.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>

namespace recgpt {
namespace {

KvCacheConfig small_config() {
  KvCacheConfig config;
  config.num_layers = 3;
  config.num_kv_heads = 2;
  config.head_dim = 8;
  config.block_size = 4;
  config.dtype = DType::kBF16;
  config.num_blocks = 10;
  return config;
}

TEST_CASE("bytes per block counts every layer, K and V") {
  KvCacheConfig config = small_config();
  CHECK(config.block_bytes_per_layer() == 4 * 2 * 8 * 2);
  CHECK(config.bytes_per_block() == 3 * 2 * 4 * 2 * 8 * 2);
  CHECK(config.num_blocks_for_budget(static_cast<int64_t>(config.bytes_per_block()) * 7 + 5) == 7);
  CHECK(config.num_blocks_for_budget(10) == 0);
  config.dtype = DType::kF32;
  CHECK(config.bytes_per_block() == 3 * 2 * 4 * 2 * 8 * 4);
}

TEST_CASE("K and V arrays of every layer are aligned, disjoint and writable") {
  auto cache = KvCache::create(small_config());
  REQUIRE(cache.is_ok());
  const size_t layer_bytes = cache->layer_bytes();
  CHECK(layer_bytes == 10 * small_config().block_bytes_per_layer());
  std::set<const void*> arrays;
  for (int layer = 0; layer < 3; ++layer) {
    for (void* data : {cache->key_data(layer), cache->value_data(layer)}) {
      CHECK(reinterpret_cast<uintptr_t>(data) % 64 == 0);
      auto* begin = static_cast<std::byte*>(data);
      auto* storage = static_cast<std::byte*>(cache->storage_data());
      CHECK(begin >= storage);
      CHECK(begin + layer_bytes <= storage + cache->storage_bytes());
      std::memset(data, layer + 1, layer_bytes);
      arrays.insert(data);
    }
  }
  CHECK(arrays.size() == 6);
  // Each array still holds its own fill: none overlaps the next.
  for (int layer = 0; layer < 3; ++layer) {
    auto* value = static_cast<unsigned char*>(cache->value_data(layer));
    CHECK(value[0] == layer + 1);
    CHECK(value[layer_bytes - 1] == layer + 1);
  }
  CHECK(cache->blocks().num_blocks() == 10);
  CHECK(cache->blocks().num_free_blocks() == 10);
}

TEST_CASE("nonsensical KV cache shapes are kInvalidArgument naming the field") {
  KvCacheConfig config = small_config();
  config.head_dim = 0;
  auto zero_head = KvCache::create(config);
  REQUIRE_FALSE(zero_head.is_ok());
  CHECK(zero_head.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(zero_head.status().message(), Catch::Contains("head_dim"));

  config = small_config();
  config.num_blocks = -5;
  CHECK_THAT(KvCache::create(config).status().message(), Catch::Contains("num_blocks"));

  config = small_config();
  config.dtype = DType::kF16;
  CHECK(KvCache::create(config).status().code() == StatusCode::kInvalidArgument);

  config = small_config();
  config.num_blocks = int64_t{1} << 40;
  CHECK(KvCache::create(config).status().code() == StatusCode::kInvalidArgument);

  config = small_config();
  config.dtype = DType::kFP8E4M3;
  config.value_scale = 0.0f;
  CHECK_THAT(KvCache::create(config).status().message(), Catch::Contains("scales"));
  config.value_scale = 0.25f;
  auto fp8 = KvCache::create(config);
  REQUIRE(fp8.is_ok());
  CHECK(config.block_bytes_per_layer() == 4 * 2 * 8 * 1);
}

TEST_CASE(
    "a backend's allocator gives the cache its memory, keeps it until the cache goes, and its failures name the pool") {
  KvCacheConfig config = small_config();
  bool released = false;
  size_t asked = 0;
  {
    auto cache = KvCache::create(config, [&](size_t bytes) -> Result<KvMemory> {
      asked = bytes;
      auto* memory = static_cast<std::byte*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
      std::shared_ptr<void> owner(memory, [&](void* pointer) {
        std::free(pointer);
        released = true;
      });
      return KvMemory{memory, bytes, 3, owner};
    });
    REQUIRE(cache.is_ok());
    CHECK(cache->cuda_device() == 3);
    CHECK(cache->storage_bytes() == asked);
    CHECK(asked >= 2 * 3 * cache->layer_bytes());
    KvCache moved = std::move(cache).value();
    CHECK_FALSE(released);
  }
  CHECK(released);

  auto refused =
      KvCache::create(config, [](size_t) -> Result<KvMemory> { return resource_exhausted("no GPU memory"); });
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK_THAT(refused.status().message(), Catch::Contains("no GPU memory") && Catch::Contains("10 KV blocks"));
  CHECK(KvCache::create(config)->cuda_device() == -1);
}

TEST_CASE("a KV cache larger than memory allows is kResourceExhausted, not a crash") {
  KvCacheConfig config = small_config();
  config.num_layers = 1 << 20;
  config.num_kv_heads = 1 << 10;
  config.head_dim = 1 << 10;
  config.num_blocks = 1 << 20;
  auto cache = KvCache::create(config);
  REQUIRE_FALSE(cache.is_ok());
  // Either refused by arithmetic (overflow) or by the operating system.
  CHECK((cache.status().code() == StatusCode::kInvalidArgument ||
         cache.status().code() == StatusCode::kResourceExhausted));

  config = small_config();
  config.num_layers = 1 << 12;
  config.num_kv_heads = 1 << 6;
  config.head_dim = 1 << 8;
  config.num_blocks = 1 << 20;  // 2^50 bytes: fits the arithmetic, not the address space
  cache = KvCache::create(config);
  REQUIRE_FALSE(cache.is_ok());
  CHECK(cache.status().code() == StatusCode::kResourceExhausted);
}

TEST_CASE("a moved KV cache keeps its memory and blocks") {
  auto cache = KvCache::create(small_config());
  REQUIRE(cache.is_ok());
  auto blocks = cache->blocks().allocate(3);
  REQUIRE(blocks.is_ok());
  void* keys = cache->key_data(0);
  KvCache moved = std::move(cache).value();
  CHECK(moved.key_data(0) == keys);
  CHECK(moved.blocks().num_used_blocks() == 3);
}

}  // namespace
}  // namespace recgpt
