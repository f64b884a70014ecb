#include "engine/block_hash.h"

#include <cstring>

#include "common/status.h"

namespace recgpt {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ull;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ull;
constexpr uint64_t kVectorSeed = 0x7665637400000000ull;

constexpr uint64_t rotate_left(uint64_t value, int bits) { return (value << bits) | (value >> (64 - bits)); }

// Byte-wise loads and stores, so results do not depend on the host's endianness.
uint64_t load_le64(const std::byte* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<uint64_t>(bytes[i]);
  return value;
}

uint64_t load_le32(const std::byte* bytes) {
  uint64_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<uint64_t>(bytes[i]);
  return value;
}

void store_le(std::byte* out, uint64_t value, int num_bytes) {
  for (int i = 0; i < num_bytes; ++i) out[i] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
}

uint64_t mix_round(uint64_t accumulator, uint64_t input) {
  accumulator += input * kPrime2;
  return rotate_left(accumulator, 31) * kPrime1;
}

uint64_t merge_round(uint64_t accumulator, uint64_t value) {
  accumulator ^= mix_round(0, value);
  return accumulator * kPrime1 + kPrime4;
}

uint64_t nonzero(uint64_t key) { return key == 0 ? 1 : key; }

}  // namespace

uint64_t xxhash64(std::span<const std::byte> bytes, uint64_t seed) {
  const std::byte* cursor = bytes.data();
  const std::byte* const end = cursor + bytes.size();
  uint64_t hash;
  if (bytes.size() >= 32) {
    uint64_t lane1 = seed + kPrime1 + kPrime2;
    uint64_t lane2 = seed + kPrime2;
    uint64_t lane3 = seed;
    uint64_t lane4 = seed - kPrime1;
    for (; end - cursor >= 32; cursor += 32) {
      lane1 = mix_round(lane1, load_le64(cursor));
      lane2 = mix_round(lane2, load_le64(cursor + 8));
      lane3 = mix_round(lane3, load_le64(cursor + 16));
      lane4 = mix_round(lane4, load_le64(cursor + 24));
    }
    hash = rotate_left(lane1, 1) + rotate_left(lane2, 7) + rotate_left(lane3, 12) + rotate_left(lane4, 18);
    hash = merge_round(hash, lane1);
    hash = merge_round(hash, lane2);
    hash = merge_round(hash, lane3);
    hash = merge_round(hash, lane4);
  } else {
    hash = seed + kPrime5;
  }
  hash += static_cast<uint64_t>(bytes.size());
  for (; end - cursor >= 8; cursor += 8) {
    hash ^= mix_round(0, load_le64(cursor));
    hash = rotate_left(hash, 27) * kPrime1 + kPrime4;
  }
  if (end - cursor >= 4) {
    hash ^= load_le32(cursor) * kPrime1;
    hash = rotate_left(hash, 23) * kPrime2 + kPrime3;
    cursor += 4;
  }
  for (; cursor < end; ++cursor) {
    hash ^= static_cast<uint64_t>(*cursor) * kPrime5;
    hash = rotate_left(hash, 11) * kPrime1;
  }
  hash ^= hash >> 33;
  hash *= kPrime2;
  hash ^= hash >> 29;
  hash *= kPrime3;
  hash ^= hash >> 32;
  return hash;
}

uint64_t xxhash64(std::string_view text, uint64_t seed) {
  return xxhash64(std::as_bytes(std::span<const char>(text.data(), text.size())), seed);
}

uint64_t entity_key_from_id(std::string_view entity_id) { return nonzero(xxhash64(entity_id, 0)); }

uint64_t entity_key_from_vector(std::span<const float> vector) {
  std::vector<std::byte> bytes(vector.size() * 4);
  for (size_t i = 0; i < vector.size(); ++i) {
    float value = vector[i] == 0.0f ? 0.0f : vector[i];  // -0.0f == 0.0f, so both become +0.0f
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    store_le(bytes.data() + 4 * i, bits, 4);
  }
  return nonzero(xxhash64(bytes, kVectorSeed));
}

uint64_t hash_block(uint64_t parent_hash, std::span<const int32_t> tokens, std::span<const uint64_t> entity_keys) {
  RECGPT_CHECK_MSG(entity_keys.empty() || entity_keys.size() == tokens.size(),
                   "entity_keys must be empty or have one key per token");
  std::vector<std::byte> bytes(8 + tokens.size() * (4 + 8));
  store_le(bytes.data(), parent_hash, 8);
  std::byte* token_area = bytes.data() + 8;
  std::byte* key_area = token_area + 4 * tokens.size();  // already zero when no keys are given
  for (size_t i = 0; i < tokens.size(); ++i) {
    store_le(token_area + 4 * i, static_cast<uint32_t>(tokens[i]), 4);
    if (!entity_keys.empty()) store_le(key_area + 8 * i, entity_keys[i], 8);
  }
  return xxhash64(bytes, 0);
}

std::vector<uint64_t> compute_block_hashes(std::span<const int32_t> tokens, std::span<const uint64_t> entity_keys,
                                           int block_size) {
  RECGPT_CHECK_MSG(block_size > 0, "block_size must be positive");
  RECGPT_CHECK_MSG(entity_keys.empty() || entity_keys.size() == tokens.size(),
                   "entity_keys must be empty or have one key per token");
  const size_t size = static_cast<size_t>(block_size);
  const size_t num_blocks = tokens.size() / size;
  std::vector<uint64_t> hashes;
  hashes.reserve(num_blocks);
  uint64_t parent = 0;
  for (size_t block = 0; block < num_blocks; ++block) {
    auto block_keys = entity_keys.empty() ? entity_keys : entity_keys.subspan(block * size, size);
    parent = hash_block(parent, tokens.subspan(block * size, size), block_keys);
    hashes.push_back(parent);
  }
  return hashes;
}

}  // namespace recgpt
