// Helpers shared by the kv_transfer tests: deadlines, byte patterns, and permuted block writes between two
// registered buffers of equal-sized blocks.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string_view>
#include <vector>

#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv::testing {

inline Deadline after(std::chrono::milliseconds timeout) { return Clock::now() + timeout; }

inline std::vector<std::byte> random_bytes(size_t bytes, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<std::byte> buffer(bytes);
  for (std::byte& value : buffer) value = static_cast<std::byte>(random() & 0xff);
  return buffer;
}

inline Bytes as_bytes(std::string_view text) {
  Bytes bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  return bytes;
}

inline bool all_zero(const std::vector<std::byte>& buffer) {
  return std::all_of(buffer.begin(), buffer.end(), [](std::byte value) { return value == std::byte{0}; });
}

// [0, num_blocks) in an order drawn from `seed`.
inline std::vector<size_t> shuffled_block_order(size_t num_blocks, uint32_t seed) {
  std::vector<size_t> permutation(num_blocks);
  std::iota(permutation.begin(), permutation.end(), size_t{0});
  std::shuffle(permutation.begin(), permutation.end(), std::mt19937(seed));
  return permutation;
}

// Source block i of `source_region` goes to block permutation[i] of `remote_region`.
inline std::vector<WriteOp> permuted_block_ops(LocalRegionId source_region, RemoteRegionId remote_region,
                                               size_t block_bytes, const std::vector<size_t>& permutation) {
  std::vector<WriteOp> ops;
  for (size_t block = 0; block < permutation.size(); ++block) {
    ops.push_back({source_region, block * block_bytes, remote_region, permutation[block] * block_bytes, block_bytes});
  }
  return ops;
}

// Whether destination block permutation[i] holds source block i for every i.
inline bool permuted_blocks_landed(const std::vector<std::byte>& source, const std::vector<std::byte>& destination,
                                   size_t block_bytes, const std::vector<size_t>& permutation) {
  for (size_t block = 0; block < permutation.size(); ++block) {
    if (std::memcmp(destination.data() + permutation[block] * block_bytes, source.data() + block * block_bytes,
                    block_bytes) != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace recgpt::kv::testing
