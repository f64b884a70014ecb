#include "engine/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "common/huge_page_memory.h"

namespace recgpt {
namespace {

constexpr size_t kArrayAlignmentBytes = 4096;

Status require_positive(int64_t value, const char* field) {
  if (value > 0) return Status::ok();
  return invalid_argument(std::string("KV cache ") + field + " must be positive, got " + std::to_string(value));
}

// product = a * b; false when it overflows size_t.
bool multiply(size_t a, size_t b, size_t& product) { return !__builtin_mul_overflow(a, b, &product); }

}  // namespace

size_t KvCacheConfig::block_bytes_per_layer() const {
  return static_cast<size_t>(block_size) * static_cast<size_t>(num_kv_heads) * static_cast<size_t>(head_dim) *
         dtype_size(dtype);
}

size_t KvCacheConfig::bytes_per_block() const { return 2 * static_cast<size_t>(num_layers) * block_bytes_per_layer(); }

Status KvCacheConfig::validate() const {
  RECGPT_RETURN_IF_ERROR(require_positive(num_layers, "num_layers"));
  RECGPT_RETURN_IF_ERROR(require_positive(num_kv_heads, "num_kv_heads"));
  RECGPT_RETURN_IF_ERROR(require_positive(head_dim, "head_dim"));
  RECGPT_RETURN_IF_ERROR(require_positive(block_size, "block_size"));
  RECGPT_RETURN_IF_ERROR(require_positive(num_blocks, "num_blocks"));
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kFP8E4M3) {
    return invalid_argument("KV cache dtype must be f32, bf16 or fp8_e4m3, got " + std::string(dtype_name(dtype)));
  }
  if (!(key_scale > 0.0f && std::isfinite(key_scale)) || !(value_scale > 0.0f && std::isfinite(value_scale))) {
    return invalid_argument("KV cache scales must be positive and finite, got " + std::to_string(key_scale) + " and " +
                            std::to_string(value_scale));
  }
  if (num_blocks > std::numeric_limits<int32_t>::max()) {
    return invalid_argument("KV cache num_blocks " + std::to_string(num_blocks) + " exceeds the int32 block id range");
  }
  size_t total = 2 * static_cast<size_t>(num_layers) * dtype_size(dtype);
  bool fits = multiply(total, static_cast<size_t>(block_size), total) &&
              multiply(total, static_cast<size_t>(num_kv_heads), total) &&
              multiply(total, static_cast<size_t>(head_dim), total) &&
              multiply(total, static_cast<size_t>(num_blocks), total) && total <= (size_t{1} << 60);
  if (!fits) {
    return invalid_argument("KV cache of " + std::to_string(num_blocks) + " blocks overflows the address space");
  }
  return Status::ok();
}

int64_t KvCacheConfig::num_blocks_for_budget(int64_t budget_bytes) const {
  if (num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0 || block_size <= 0 || budget_bytes <= 0) return 0;
  size_t per_block = bytes_per_block();
  if (per_block == 0 || per_block > static_cast<size_t>(budget_bytes)) return 0;
  int64_t blocks = budget_bytes / static_cast<int64_t>(per_block);
  return std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max());
}

Result<KvCache> KvCache::create(const KvCacheConfig& config) {
  return create(config, [](size_t bytes) -> Result<KvMemory> {
    // Transparent huge pages where the system allows them on request: attention reads K and V rows from many
    // blocks, and with 4 KiB pages each block of a layer is a TLB miss (measured in a VM: storing and attending
    // over KV 5-7x slower, most of it first-touch faults).
    RECGPT_ASSIGN_OR_RETURN(HugePageMemory pages, HugePageMemory::allocate(bytes));
    // The pool is committed here, not on first use: a node that starts has its KV memory (a short machine fails
    // at start, not mid-request), and no decode step pays for faulting in and clearing fresh pages (measured:
    // storing a batch-32 step's K and V 1 -> 4 ms per step while the pool was being touched).
    RECGPT_RETURN_IF_ERROR(pages.commit());
    auto owner = std::make_shared<HugePageMemory>(std::move(pages));
    return KvMemory{owner->data(), owner->size(), -1, owner};
  });
}

Result<KvCache> KvCache::create(const KvCacheConfig& config, const KvMemoryAllocator& allocate) {
  RECGPT_RETURN_IF_ERROR(config.validate());
  size_t layer_bytes = static_cast<size_t>(config.num_blocks) * config.block_bytes_per_layer();
  size_t stride = (layer_bytes + kArrayAlignmentBytes - 1) / kArrayAlignmentBytes * kArrayAlignmentBytes;
  size_t total = 0;
  if (!multiply(stride, 2 * static_cast<size_t>(config.num_layers), total)) {
    return invalid_argument("KV cache size overflows the address space");
  }
  Result<KvMemory> storage = allocate(total);
  const std::string blocks = " for " + std::to_string(config.num_blocks) + " KV blocks";
  if (!storage.is_ok()) return resource_exhausted(storage.status().message() + blocks);
  RECGPT_CHECK(storage->bytes >= total && reinterpret_cast<uintptr_t>(storage->data) % kArrayAlignmentBytes == 0);
  return KvCache(config, std::move(storage).value(), stride);
}

KvCache::KvCache(const KvCacheConfig& config, KvMemory storage, size_t array_stride_bytes)
    : config_(config),
      storage_(std::move(storage)),
      array_stride_bytes_(array_stride_bytes),
      blocks_(config.num_blocks) {}

void* KvCache::key_data(int layer) { return const_cast<void*>(std::as_const(*this).key_data(layer)); }
void* KvCache::value_data(int layer) { return const_cast<void*>(std::as_const(*this).value_data(layer)); }

const void* KvCache::key_data(int layer) const {
  RECGPT_CHECK(storage_.data != nullptr && layer >= 0 && layer < config_.num_layers);
  return storage_.data + (2 * static_cast<size_t>(layer)) * array_stride_bytes_;
}

const void* KvCache::value_data(int layer) const {
  RECGPT_CHECK(storage_.data != nullptr && layer >= 0 && layer < config_.num_layers);
  return storage_.data + (2 * static_cast<size_t>(layer) + 1) * array_stride_bytes_;
}

}  // namespace recgpt
