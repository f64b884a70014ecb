// Where a node's paged KV cache lies in its registered memory, and the copies that move blocks between two
// such caches one layer at a time.
//
// The layout is the engine's (engine/kv_cache.h): for each layer, K and V are each one array
// [num_blocks, block_size, num_kv_heads, head_dim]; K of layer l starts 2·l·array_stride_bytes and V
// (2·l + 1)·array_stride_bytes after the region's base. So (layer, block) is one contiguous chunk, and runs of
// blocks adjacent on both sides coalesce into one copy. Nodes exchange KvLayoutDescription in their handshake;
// two layouts must agree on everything but num_blocks and array_stride_bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace recgpt::kv {

struct KvLayoutDescription {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;               // tokens per block
  std::string dtype;                // element type of K and V: "f32", "bf16", "f16" or "fp8_e4m3"
  int64_t num_blocks = 0;           // at most INT32_MAX (block ids are int32)
  uint64_t array_stride_bytes = 0;  // >= num_blocks * block_bytes()
  // fp8_e4m3 only: an element reads back as e4m3 * scale (engine/kv_cache.h); ignored for other dtypes.
  float key_scale = 1.0f;
  float value_scale = 1.0f;

  // Bytes of one block of one layer's K (or V): block_size * num_kv_heads * head_dim * element size.
  // Only meaningful after validate() passed.
  uint64_t block_bytes() const;
  // Bytes from the region's base past the last V array: what the registered region must hold (also only
  // meaningful after validate()).
  uint64_t region_bytes() const;
};

// kInvalidArgument naming the field: a size not positive, an unknown dtype, too many blocks, a stride too
// small for the blocks, sizes whose products overflow, or (fp8_e4m3) a scale not positive and finite.
Status validate_layout(const KvLayoutDescription& layout);

// kInvalidArgument naming the first field in which the layouts differ, e.g. "KV layouts differ in
// block_size: 16 here, 32 at the peer". num_blocks and array_stride_bytes may differ; the scales must agree
// for fp8_e4m3 (the same bytes mean other values under another scale).
Status check_layouts_match(const KvLayoutDescription& local, const KvLayoutDescription& remote);

// One contiguous copy, as byte offsets from each side's region base.
struct BlockCopy {
  uint64_t source_offset = 0;
  uint64_t destination_offset = 0;
  uint64_t length = 0;

  bool operator==(const BlockCopy&) const = default;
};

// The copies that move source block source_blocks[i] into destination block destination_blocks[i] for one
// layer, K then V; blocks adjacent on both sides (source and destination ids both ascending by one) become
// one copy. Of the last listed block only its first `last_block_tokens` token rows move (0: all of it), so a
// prompt's partial last block never overwrites the rows the receiver decodes into (a block is
// [block_size, num_kv_heads, head_dim]: its leading rows are contiguous). kInvalidArgument for lists of
// different lengths, a block id out of range, a layer out of range, or last_block_tokens outside
// [0, block_size]; the layouts must have passed check_layouts_match.
Result<std::vector<BlockCopy>> layer_copies(const KvLayoutDescription& source, std::span<const int32_t> source_blocks,
                                            const KvLayoutDescription& destination,
                                            std::span<const int32_t> destination_blocks, int layer,
                                            int last_block_tokens = 0);

}  // namespace recgpt::kv
