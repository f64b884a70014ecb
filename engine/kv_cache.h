// The paged KV cache of one engine: KV memory in vLLM's layout plus the BlockManager that hands out its
// blocks.
//
// Layout: for each layer, K and V are each one contiguous array [num_blocks, block_size, num_kv_heads,
// head_dim] of `dtype`, so (layer, block) is one contiguous chunk of block_bytes_per_layer() bytes and runs
// of adjacent blocks coalesce into one transfer. Every K and V array starts on a 4096-byte boundary (so at
// least 64-byte aligned). Memory is anonymous, on transparent huge pages where the system gives them, and
// committed by create(): a node that starts has its whole pool (storage_bytes() of RSS).
//
// Threading: not thread-safe; owned by the engine step thread. Backends write KV through key_data() and
// value_data() during forward(), on that same thread (or on a device stream it synchronizes).
//
// Where the memory is: host memory by default (create(config)); a backend that computes elsewhere (the CUDA
// backend) makes the cache in its device's memory through create(config, allocate) — Backend::create_kv_cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "common/status.h"
#include "engine/block_manager.h"
#include "engine/dtype.h"

namespace recgpt {

struct KvCacheConfig {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;        // tokens per block
  DType dtype = DType::kF32;  // kF32, kBF16, or kFP8E4M3 (the CUDA backend's)
  int64_t num_blocks = 0;
  // FP8 only: an element holds e4m3(x / scale) and reads back as e4m3 * scale, per tensor (vLLM's k_scale and
  // v_scale). 1 suits Qwen3's normed keys; values of smaller range keep more precision with a smaller scale.
  float key_scale = 1.0f;
  float value_scale = 1.0f;

  // kInvalidArgument naming the field when a size or scale is not positive, dtype is unsupported, num_blocks
  // exceeds INT32_MAX (block ids are int32), or the total size overflows.
  Status validate() const;

  // Bytes of one block in one layer's K (or V) array: block_size * num_kv_heads * head_dim * dtype size.
  size_t block_bytes_per_layer() const;
  // Bytes of one block over all layers, K and V: what one block of the pool costs.
  size_t bytes_per_block() const;
  // How many blocks fit in `budget_bytes` (all layers, K and V); 0 when the budget is below one block or
  // the shape is invalid.
  int64_t num_blocks_for_budget(int64_t budget_bytes) const;
};

// Memory a cache lives in, owned by `owner` (freed when the last copy of it goes).
struct KvMemory {
  std::byte* data = nullptr;
  size_t bytes = 0;
  int cuda_device = -1;  // the CUDA device holding it; -1 for host memory
  std::shared_ptr<void> owner;
};

// Returns at least `bytes` of zeroed memory, or kResourceExhausted naming the size.
using KvMemoryAllocator = std::function<Result<KvMemory>(size_t bytes)>;

class KvCache {
 public:
  // Validates `config` (kInvalidArgument) and maps its memory in host memory: kResourceExhausted naming the size
  // when the operating system refuses it.
  static Result<KvCache> create(const KvCacheConfig& config);
  // The same layout in memory from `allocate` (e.g. a GPU's); its data must start on a 4096-byte boundary.
  static Result<KvCache> create(const KvCacheConfig& config, const KvMemoryAllocator& allocate);

  KvCache(KvCache&& other) noexcept = default;
  KvCache& operator=(KvCache&& other) noexcept = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvCacheConfig& config() const { return config_; }

  // [num_blocks, block_size, num_kv_heads, head_dim] of config().dtype; layer in [0, num_layers)
  // (RECGPT_CHECK). Owned by this cache, valid for its lifetime.
  void* key_data(int layer);
  void* value_data(int layer);
  const void* key_data(int layer) const;
  const void* value_data(int layer) const;

  // Bytes of one layer's K (or V) array: num_blocks * block_bytes_per_layer().
  size_t layer_bytes() const { return static_cast<size_t>(config_.num_blocks) * config_.block_bytes_per_layer(); }

  // Bytes from one K or V array to the next: K of layer l starts 2·l strides into storage_data(), V 2·l + 1.
  size_t array_stride_bytes() const { return array_stride_bytes_; }

  // The whole mapping (every K and V array plus alignment padding), e.g. to register with a transfer engine.
  void* storage_data() { return storage_.data; }
  size_t storage_bytes() const { return storage_.bytes; }
  // The CUDA device the memory is on; -1 for host memory.
  int cuda_device() const { return storage_.cuda_device; }

  BlockManager& blocks() { return blocks_; }
  const BlockManager& blocks() const { return blocks_; }

 private:
  KvCache(const KvCacheConfig& config, KvMemory storage, size_t array_stride_bytes);

  KvCacheConfig config_;
  KvMemory storage_;
  size_t array_stride_bytes_ = 0;  // layer_bytes() rounded up to 4096; K of layer l at 2l, V at 2l+1 strides
  BlockManager blocks_;
};

}  // namespace recgpt
