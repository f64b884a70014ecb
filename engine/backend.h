// The compute backend: runs the Qwen3 forward pass of one model over a Batch, reading and writing the paged KV
// cache. Implementations are created by name through create_backend(); callers never #ifdef on backends.
#pragma once

#include <memory>
#include <memory_resource>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/batch.h"

namespace recgpt {

class KvCache;
class ModelFiles;
struct KvCacheConfig;

// A step's logits in host memory, [rows, vocab_size] floats. Its memory resource is the caller's choice: the one
// the backend names (Backend::logits_memory) is where forward() writes fastest, any other works too.
using HostLogits = std::pmr::vector<float>;

struct BackendOptions {
  int num_threads = 0;  // 0: one per available core
  // cpu: copy the projection weights into the kernels' tiled layout at load where the CPU supports it
  // (engine/cpu/tiled_weights.h); false reads every weight in place from the mapped files.
  bool repack_weights = true;
  int cuda_device = 0;  // cuda: the GPU this backend computes on, and its KV cache lives on
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;

  // A KV cache in the memory this backend computes on (host memory for the CPU backend, the GPU's for CUDA):
  // forward() takes only caches made here. kInvalidArgument for a bad config, kResourceExhausted when the memory
  // is not there, kUnimplemented for a dtype the backend cannot attend over.
  virtual Result<KvCache> create_kv_cache(const KvCacheConfig& config);

  // Runs one step. Checks the batch first (validate_batch); a bad batch leaves the cache untouched.
  // `logits` is resized to [batch.num_logit_rows(), vocab_size], rows in sequence order.
  // Not thread-safe: one step at a time (the engine step thread owns the backend).
  virtual Status forward(const Batch& batch, KvCache& kv_cache, HostLogits& logits) = 0;

  // The memory a caller's HostLogits should draw on, for forward() to fill it fastest; it outlives every backend.
  // CUDA: page-locked host memory, which the GPU writes at the bus's rate; pageable memory goes through the
  // driver's staging copies, a third to three quarters of a decode step at batches of 32-128 on an H200
  // (docs/benchmarks.md).
  virtual std::pmr::memory_resource* logits_memory() const { return std::pmr::new_delete_resource(); }

  // The host memory a decode step reads the projection and LM-head weights from, where the backend reads a copy
  // of its own (benchmarks set decode against the read rate of exactly these bytes); empty when it reads them in
  // place from the model's files, or not from host memory.
  virtual std::vector<std::span<const std::byte>> decode_weight_memory() const { return {}; }
};

// Names of the backends compiled into this binary, e.g. {"cpu"} or {"cpu", "cuda"}.
std::vector<std::string> available_backends();

// `model` must outlive the backend (its weights stay memory-mapped and are used in place).
Result<std::unique_ptr<Backend>> create_backend(std::string_view name, const ModelFiles& model,
                                                const BackendOptions& options);

struct ModelConfig;

// Token ids within the vocabulary and exactly entity_dim values per entity token (kInvalidArgument naming
// the first violation). Used by validate_batch and by request admission.
Status validate_tokens(std::span<const int32_t> tokens, size_t num_entity_values, const ModelConfig& config);

// Shared input checks of every backend: a cache of the model's layer and head shape, token ids within the vocabulary,
// one entity vector per entity token, block tables covering every position, positions within max_position_embeddings,
// block ids within the pool.
Status validate_batch(const Batch& batch, const ModelFiles& model, const KvCache& kv_cache);

}  // namespace recgpt
