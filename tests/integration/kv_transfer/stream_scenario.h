// One request's KV stream between two nodes, derived from a seed so that a writer and a reader in different
// processes agree on it from the seed alone: both layouts, a random block mapping (some runs adjacent on both
// sides, so copies coalesce), and the byte pattern the writer's cache holds. Shared by the kv_transfer peer
// program and the tests that drive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kv_transfer/kv_layout.h"
#include "kv_transfer/kv_stream.h"

namespace recgpt::kv::testing {

struct StreamScenario {
  uint64_t seed = 0;
  KvLayoutDescription source;       // the writer's (prefill) cache
  KvLayoutDescription destination;  // the reader's (decode) cache: more blocks, a padded stride
  std::vector<int32_t> source_blocks;
  std::vector<int32_t> destination_blocks;  // source_blocks[i] lands in destination_blocks[i]
  std::string request_id;

  // `num_layers` layers of bf16 KV, 4 KiB blocks.
  static StreamScenario from_seed(uint64_t seed, int num_layers);
};

// Host memory of one cache, 64-byte aligned (std::vector<std::byte> would not promise it).
class CacheMemory {
 public:
  explicit CacheMemory(const KvLayoutDescription& layout);
  std::byte* data() { return bytes_.data() + offset_; }
  const std::byte* data() const { return bytes_.data() + offset_; }
  size_t size() const { return size_; }
  MemoryRegion region() { return {data(), size_, MemoryKind::kHost, -1}; }
  void fill(std::byte value);

 private:
  std::vector<std::byte> bytes_;
  size_t offset_ = 0;
  size_t size_ = 0;
};

// The writer's cache: every byte a function of the seed and its offset.
void fill_source_pattern(CacheMemory& source, uint64_t seed);

// Bytes of the mapped destination blocks of `layers` (K and V) that differ from the source pattern, and the
// number checked. Everything outside the mapped blocks is not looked at.
struct Mismatches {
  uint64_t differing = 0;
  uint64_t checked = 0;
};
Mismatches count_mismatches(const StreamScenario& scenario, const CacheMemory& destination,
                            std::span<const int32_t> layers);

// Every layer index of the scenario, ascending.
std::vector<int32_t> all_layers(const StreamScenario& scenario);

// The writer's config for the scenario, given its engine's handles.
KvStreamWriterConfig writer_config(const StreamScenario& scenario, PeerId reader, LocalRegionId source_region,
                                   RemoteRegionId destination_region, const CacheMemory& source);
// What the reader passes to expect() to have the checksum verified.
KvStreamDestination destination_view(const StreamScenario& scenario, const CacheMemory& destination);

}  // namespace recgpt::kv::testing
