// CUDA graphs of whole decode steps: the first step of a shape is captured as it runs, later steps of that shape
// replay it (one launch instead of ~10 per layer). A graph bakes in every device address and launch shape, so
// the key holds what decides them, and the owner clears the graphs whenever a buffer they read moves.
// Internal to cuda_kernels/.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <tuple>

#include "common/status.h"

namespace recgpt::cuda {

struct StepGraphKey {
  int64_t tokens = 0;
  int64_t logit_rows = 0;
  int64_t attention_tiles = 0;
  int max_tile_rows = 0;
  int splits = 0;
  // What a graph bakes in of the KV cache: its arrays' addresses, the kernels its element type picks and their
  // parameters. A new cache at a freed one's address differs in one of these, or is the same to the graph.
  const void* kv_memory = nullptr;
  size_t kv_array_stride_bytes = 0;
  int kv_block_size = 0;
  int kv_dtype = 0;
  float kv_key_scale = 1.0f, kv_value_scale = 1.0f;

  auto tied() const {
    return std::tie(tokens, logit_rows, attention_tiles, max_tile_rows, splits, kv_memory, kv_array_stride_bytes,
                    kv_block_size, kv_dtype, kv_key_scale, kv_value_scale);
  }
  bool operator<(const StepGraphKey& other) const { return tied() < other.tied(); }
};

class StepGraphs {
 public:
  StepGraphs() = default;
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;
  ~StepGraphs() { clear(); }

  // Replays the graph of `key` on `stream`, capturing `enqueue` (which must only enqueue work on `stream`)
  // first when there is none. The capture's error, or kUnavailable for a CUDA failure.
  Status run(const StepGraphKey& key, cudaStream_t stream, const std::function<Status()>& enqueue);

  void clear();
  size_t size() const { return graphs_.size(); }

 private:
  static constexpr size_t kMaxGraphs = 256;  // about one per batch size and split count in use
  std::map<StepGraphKey, cudaGraphExec_t> graphs_;
};

}  // namespace recgpt::cuda
