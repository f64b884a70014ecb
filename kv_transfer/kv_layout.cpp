#include "kv_transfer/kv_layout.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

namespace recgpt::kv {
namespace {

// Element bytes of a KV dtype name; 0 when unknown.
uint64_t element_bytes(const std::string& dtype) {
  if (dtype == "f32") return 4;
  if (dtype == "bf16" || dtype == "f16") return 2;
  if (dtype == "fp8_e4m3") return 1;
  return 0;
}

bool multiply(uint64_t a, uint64_t b, uint64_t* product) { return !__builtin_mul_overflow(a, b, product); }

Status check_positive(int64_t value, const char* field) {
  if (value > 0) return Status::ok();
  return invalid_argument(std::string("KV layout field ") + field + " must be positive, got " + std::to_string(value));
}

Status check_block(std::span<const int32_t> blocks, size_t index, int64_t num_blocks, const char* side) {
  int32_t block = blocks[index];
  if (block >= 0 && block < num_blocks) return Status::ok();
  return invalid_argument(std::string(side) + " block id " + std::to_string(block) + " at index " +
                          std::to_string(index) + " is outside [0, " + std::to_string(num_blocks) + ")");
}

}  // namespace

uint64_t KvLayoutDescription::block_bytes() const {
  return static_cast<uint64_t>(block_size) * static_cast<uint64_t>(num_kv_heads) * static_cast<uint64_t>(head_dim) *
         element_bytes(dtype);
}

uint64_t KvLayoutDescription::region_bytes() const {
  return (2 * static_cast<uint64_t>(num_layers) - 1) * array_stride_bytes +
         static_cast<uint64_t>(num_blocks) * block_bytes();
}

Status validate_layout(const KvLayoutDescription& layout) {
  RECGPT_RETURN_IF_ERROR(check_positive(layout.num_layers, "num_layers"));
  RECGPT_RETURN_IF_ERROR(check_positive(layout.num_kv_heads, "num_kv_heads"));
  RECGPT_RETURN_IF_ERROR(check_positive(layout.head_dim, "head_dim"));
  RECGPT_RETURN_IF_ERROR(check_positive(layout.block_size, "block_size"));
  RECGPT_RETURN_IF_ERROR(check_positive(layout.num_blocks, "num_blocks"));
  if (element_bytes(layout.dtype) == 0) {
    return invalid_argument("KV layout field dtype '" + layout.dtype + "' is not one of f32, bf16, f16, fp8_e4m3");
  }
  if (layout.num_blocks > std::numeric_limits<int32_t>::max()) {
    return invalid_argument("KV layout field num_blocks " + std::to_string(layout.num_blocks) +
                            " exceeds the int32 block ids");
  }
  uint64_t block = 0;
  uint64_t array = 0;
  uint64_t arrays = 0;
  uint64_t region = 0;
  bool fits = multiply(static_cast<uint64_t>(layout.block_size) * static_cast<uint64_t>(layout.num_kv_heads),
                       static_cast<uint64_t>(layout.head_dim) * element_bytes(layout.dtype), &block) &&
              multiply(block, static_cast<uint64_t>(layout.num_blocks), &array) &&
              multiply(2 * static_cast<uint64_t>(layout.num_layers), layout.array_stride_bytes, &arrays) &&
              !__builtin_add_overflow(arrays, array, &region);
  if (!fits) return invalid_argument("KV layout sizes overflow 64 bits");
  if (layout.dtype == "fp8_e4m3") {
    for (const auto& [scale, field] : {std::pair{layout.key_scale, "key_scale"}, {layout.value_scale, "value_scale"}}) {
      if (!(scale > 0.0f && std::isfinite(scale))) {
        return invalid_argument(std::string("KV layout field ") + field + " must be positive and finite, got " +
                                std::to_string(scale));
      }
    }
  }
  if (layout.array_stride_bytes < array) {
    return invalid_argument("KV layout field array_stride_bytes " + std::to_string(layout.array_stride_bytes) +
                            " is smaller than num_blocks x block bytes = " + std::to_string(array));
  }
  return Status::ok();
}

Status check_layouts_match(const KvLayoutDescription& local, const KvLayoutDescription& remote) {
  auto differ = [](const char* field, const std::string& here, const std::string& there) {
    return invalid_argument(std::string("KV layouts differ in ") + field + ": " + here + " here, " + there +
                            " at the peer");
  };
  if (local.num_layers != remote.num_layers) {
    return differ("num_layers", std::to_string(local.num_layers), std::to_string(remote.num_layers));
  }
  if (local.num_kv_heads != remote.num_kv_heads) {
    return differ("num_kv_heads", std::to_string(local.num_kv_heads), std::to_string(remote.num_kv_heads));
  }
  if (local.head_dim != remote.head_dim) {
    return differ("head_dim", std::to_string(local.head_dim), std::to_string(remote.head_dim));
  }
  if (local.block_size != remote.block_size) {
    return differ("block_size", std::to_string(local.block_size), std::to_string(remote.block_size));
  }
  if (local.dtype != remote.dtype) return differ("dtype", local.dtype, remote.dtype);
  if (local.dtype == "fp8_e4m3") {
    if (local.key_scale != remote.key_scale) {
      return differ("key_scale", std::to_string(local.key_scale), std::to_string(remote.key_scale));
    }
    if (local.value_scale != remote.value_scale) {
      return differ("value_scale", std::to_string(local.value_scale), std::to_string(remote.value_scale));
    }
  }
  RECGPT_RETURN_IF_ERROR(validate_layout(local).with_context("local KV layout"));
  return validate_layout(remote).with_context("peer KV layout");
}

Result<std::vector<BlockCopy>> layer_copies(const KvLayoutDescription& source, std::span<const int32_t> source_blocks,
                                            const KvLayoutDescription& destination,
                                            std::span<const int32_t> destination_blocks, int layer,
                                            int last_block_tokens) {
  if (source_blocks.size() != destination_blocks.size()) {
    return invalid_argument("block lists differ in length: " + std::to_string(source_blocks.size()) + " source, " +
                            std::to_string(destination_blocks.size()) + " destination");
  }
  if (layer < 0 || layer >= source.num_layers) {
    return invalid_argument("layer " + std::to_string(layer) + " is outside [0, " + std::to_string(source.num_layers) +
                            ")");
  }
  for (size_t i = 0; i < source_blocks.size(); ++i) {
    RECGPT_RETURN_IF_ERROR(check_block(source_blocks, i, source.num_blocks, "source"));
    RECGPT_RETURN_IF_ERROR(check_block(destination_blocks, i, destination.num_blocks, "destination"));
  }
  if (last_block_tokens < 0 || last_block_tokens > source.block_size) {
    return invalid_argument("last_block_tokens " + std::to_string(last_block_tokens) + " is outside [0, " +
                            std::to_string(source.block_size) + "]");
  }
  const uint64_t block = source.block_bytes();
  // Bytes of the last block's rows that stay behind (its rows are block_bytes / block_size each).
  const uint64_t last_block_short = last_block_tokens == 0 ? 0
                                                           : block / static_cast<uint64_t>(source.block_size) *
                                                                 (source.block_size - last_block_tokens);
  std::vector<BlockCopy> copies;
  for (int array = 0; array < 2; ++array) {  // K, then V
    const uint64_t source_base = (2 * static_cast<uint64_t>(layer) + array) * source.array_stride_bytes;
    const uint64_t destination_base = (2 * static_cast<uint64_t>(layer) + array) * destination.array_stride_bytes;
    size_t run_begin = 0;
    for (size_t i = 1; i <= source_blocks.size(); ++i) {
      bool continues = i < source_blocks.size() && source_blocks[i] == source_blocks[i - 1] + 1 &&
                       destination_blocks[i] == destination_blocks[i - 1] + 1;
      if (continues) continue;
      if (i > run_begin) {
        copies.push_back({source_base + static_cast<uint64_t>(source_blocks[run_begin]) * block,
                          destination_base + static_cast<uint64_t>(destination_blocks[run_begin]) * block,
                          (i - run_begin) * block});
      }
      run_begin = i;
    }
    if (!source_blocks.empty()) copies.back().length -= last_block_short;  // the last run ends with the last block
  }
  return copies;
}

}  // namespace recgpt::kv
