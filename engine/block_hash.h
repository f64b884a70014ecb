// Prefix chain hashes of KV blocks, and the entity keys that enter them.
//
// These hashes are a wire contract: the router computes them to score prefix-cache overlap, and every
// engine computes them to index its cached blocks, possibly on other machines and in other versions.
// So the algorithm is fixed here, byte for byte, and must never change silently:
//
//   H(bytes, seed) = XXH64 (xxHash 64-bit, as in the reference implementation by Yann Collet).
//
//   entity_key_from_id(id)      = H(UTF-8 bytes of id, seed 0), with 0 replaced by 1.
//   entity_key_from_vector(v)   = H(v[0..n) as IEEE-754 binary32 little-endian, seed 0x7665637400000000),
//                                 with -0.0f written as +0.0f, and 0 replaced by 1.
//   Normal tokens have entity key 0 (so no entity, whatever its key, hashes like a plain token).
//
//   block_hash[i] = H(parent || tokens || keys, seed 0), where
//     parent = block_hash[i - 1] (0 for block 0) as uint64 little-endian,
//     tokens = the block_size token ids of block i as int32 little-endian,
//     keys   = the block_size entity keys of block i as uint64 little-endian (all 0 when none given),
//   so a block's hash depends on every token and entity of blocks 0..i. Only FULL blocks are hashed.
//
// All functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace recgpt {

// XXH64 of `bytes` with `seed`; identical to XXH64() of the reference xxHash library on every platform.
uint64_t xxhash64(std::span<const std::byte> bytes, uint64_t seed = 0);
uint64_t xxhash64(std::string_view text, uint64_t seed = 0);

// Key of an entity named by id (e.g. an item id); never 0.
uint64_t entity_key_from_id(std::string_view entity_id);

// Key of an entity given by its embedding vector; never 0. Equal vectors (with -0 == +0) have equal keys.
uint64_t entity_key_from_vector(std::span<const float> vector);

// Hash of one full block whose predecessor hashed to `parent_hash` (0 for the first block): what a
// sequence uses to register a block that generation has just filled. tokens.size() is the block size;
// `entity_keys` is empty or of the same length (else RECGPT_CHECK aborts).
uint64_t hash_block(uint64_t parent_hash, std::span<const int32_t> tokens, std::span<const uint64_t> entity_keys);

// One chained hash per full block of `tokens`: tokens.size() / block_size hashes; a partial tail block
// gets none. `entity_keys` is empty (all tokens are plain) or has one key per token (0 for plain tokens).
// Aborts (RECGPT_CHECK) when block_size <= 0 or the lengths differ: both are caller bugs.
std::vector<uint64_t> compute_block_hashes(std::span<const int32_t> tokens, std::span<const uint64_t> entity_keys,
                                           int block_size);

}  // namespace recgpt
