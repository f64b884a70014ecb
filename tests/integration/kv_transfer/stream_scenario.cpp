#include "tests/integration/kv_transfer/stream_scenario.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include "common/status.h"

namespace recgpt::kv::testing {
namespace {

constexpr int kSourceBlocks = 48;
constexpr int kDestinationBlocks = 64;
constexpr int kMappedBlocks = 40;

KvLayoutDescription layout(int num_layers, int num_blocks, uint64_t stride_padding) {
  KvLayoutDescription description;
  description.num_layers = num_layers;
  description.num_kv_heads = 2;
  description.head_dim = 64;
  description.block_size = 16;
  description.dtype = "bf16";
  description.num_blocks = num_blocks;
  description.array_stride_bytes = static_cast<uint64_t>(num_blocks) * 16 * 2 * 64 * 2 + stride_padding;
  return description;
}

// `count` distinct ids of [0, num_blocks): the first half one ascending run (copies coalesce), the rest random.
std::vector<int32_t> pick_blocks(int num_blocks, int count, std::mt19937_64& random) {
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), random);
  std::vector<int32_t> run(count / 2);
  std::iota(run.begin(), run.end(), static_cast<int32_t>(random() % (num_blocks - run.size() + 1)));
  std::vector<int32_t> picked = run;
  for (int32_t id : ids) {
    if (static_cast<int>(picked.size()) == count) break;
    if (std::find(run.begin(), run.end(), id) == run.end()) picked.push_back(id);
  }
  return picked;
}

uint64_t mix(uint64_t value) {  // splitmix64's finaliser
  value ^= value >> 30;
  value *= 0xbf58476d1ce4e5b9ull;
  value ^= value >> 27;
  value *= 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

// The 8 source bytes at `offset` (a multiple of 8).
uint64_t pattern_word(uint64_t seed, uint64_t offset) { return mix(seed * 0x9e3779b97f4a7c15ull + offset); }

}  // namespace

StreamScenario StreamScenario::from_seed(uint64_t seed, int num_layers) {
  StreamScenario scenario;
  scenario.seed = seed;
  scenario.source = layout(num_layers, kSourceBlocks, 0);
  scenario.destination = layout(num_layers, kDestinationBlocks, 4096);
  std::mt19937_64 random(seed);
  scenario.source_blocks = pick_blocks(kSourceBlocks, kMappedBlocks, random);
  scenario.destination_blocks = pick_blocks(kDestinationBlocks, kMappedBlocks, random);
  scenario.request_id = "request-" + std::to_string(seed);
  return scenario;
}

CacheMemory::CacheMemory(const KvLayoutDescription& layout) : size_(layout.region_bytes()) {
  RECGPT_CHECK(validate_layout(layout).is_ok());
  bytes_.resize(size_ + 64);
  offset_ = (64 - reinterpret_cast<uintptr_t>(bytes_.data()) % 64) % 64;
}

void CacheMemory::fill(std::byte value) { std::fill(data(), data() + size_, value); }

void fill_source_pattern(CacheMemory& source, uint64_t seed) {
  RECGPT_CHECK(source.size() % 8 == 0);
  for (uint64_t offset = 0; offset < source.size(); offset += 8) {
    uint64_t word = pattern_word(seed, offset);
    std::memcpy(source.data() + offset, &word, 8);
  }
}

Mismatches count_mismatches(const StreamScenario& scenario, const CacheMemory& destination,
                            std::span<const int32_t> layers) {
  Mismatches result;
  const uint64_t block = scenario.source.block_bytes();
  for (int32_t layer : layers) {
    for (uint64_t array = 0; array < 2; ++array) {
      const uint64_t source_base = (2 * static_cast<uint64_t>(layer) + array) * scenario.source.array_stride_bytes;
      const uint64_t destination_base =
          (2 * static_cast<uint64_t>(layer) + array) * scenario.destination.array_stride_bytes;
      for (size_t i = 0; i < scenario.source_blocks.size(); ++i) {
        const uint64_t from = source_base + static_cast<uint64_t>(scenario.source_blocks[i]) * block;
        const std::byte* to = destination.data() + destination_base + scenario.destination_blocks[i] * block;
        for (uint64_t offset = 0; offset < block; offset += 8) {
          uint64_t expected = pattern_word(scenario.seed, from + offset), actual = 0;
          std::memcpy(&actual, to + offset, 8);
          for (int byte = 0; byte < 8; ++byte) {
            result.differing += ((expected >> (8 * byte)) & 0xff) != ((actual >> (8 * byte)) & 0xff);
          }
          result.checked += 8;
        }
      }
    }
  }
  return result;
}

std::vector<int32_t> all_layers(const StreamScenario& scenario) {
  std::vector<int32_t> layers(scenario.source.num_layers);
  std::iota(layers.begin(), layers.end(), 0);
  return layers;
}

KvStreamWriterConfig writer_config(const StreamScenario& scenario, PeerId reader, LocalRegionId source_region,
                                   RemoteRegionId destination_region, const CacheMemory& source) {
  KvStreamWriterConfig config;
  config.peer = reader;
  config.source_region = source_region;
  config.source_layout = scenario.source;
  config.destination_region = destination_region;
  config.destination_layout = scenario.destination;
  config.source_blocks = scenario.source_blocks;
  config.destination_blocks = scenario.destination_blocks;
  config.request_id = scenario.request_id;
  config.checksum_source = source.data();
  return config;
}

KvStreamDestination destination_view(const StreamScenario& scenario, const CacheMemory& destination) {
  return {destination.data(), scenario.destination, scenario.destination_blocks};
}

}  // namespace recgpt::kv::testing
