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
  int splits = 0;
  const void* kv_memory = nullptr;  // the cache the graph writes

  bool operator<(const StepGraphKey& other) const {
    return std::tie(tokens, logit_rows, splits, kv_memory) <
           std::tie(other.tokens, other.logit_rows, other.splits, other.kv_memory);
  }
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
