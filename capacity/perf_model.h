// The time one forward step takes on one node, from the model's cost formulas (engine/model_cost.h) and a
// hardware profile: a roofline with measured-style efficiencies,
//
//   seconds = step_overhead + max(flops / (peak_flops * flops_efficiency),
//                                 bytes / (memory_bandwidth * bandwidth_efficiency))
//
// where flops counts every new token's projections and attention plus one LM-head row per logits row, and
// bytes counts the weights once per step plus the KV cache the step reads and writes. A step may mix prompt
// tokens (prefill, chunked) and decode tokens, as a colocated node's steps do. Also: the KV pool one node holds
// and the time a KV push takes.
#pragma once

#include <cstdint>

#include "capacity/hardware.h"
#include "engine/dtype.h"
#include "engine/model_config.h"

namespace recgpt::capacity {

struct StepWork {
  int64_t prompt_tokens = 0;          // prompt tokens computed in this step
  double prompt_attention_pairs = 0;  // sum over those tokens of how many tokens each attends to
  int64_t decode_tokens = 0;          // one per running sequence
  double decode_context_tokens = 0;   // sum of the running sequences' lengths (the KV a decode step reads)
  int64_t logits_rows = 0;            // prompts finished in this step + decode tokens
};

class PerfModel {
 public:
  // kInvalidArgument when the weights do not fit the node's memory with room for at least one KV block.
  static Result<PerfModel> create(const ModelConfig& config, const HardwareProfile& hardware, DType weight_dtype,
                                  DType kv_dtype, int block_size);

  double step_seconds(const StepWork& work) const;
  // A KV push of `tokens` tokens over the node's link (not overlapped with anything).
  double transfer_seconds(int64_t tokens) const;

  double weight_bytes() const { return weight_bytes_; }
  double kv_bytes_per_token() const { return kv_bytes_per_token_; }
  int64_t kv_blocks() const { return kv_blocks_; }  // blocks of `block_size` tokens one node's pool holds
  int block_size() const { return block_size_; }
  const ModelConfig& config() const { return config_; }
  const HardwareProfile& hardware() const { return hardware_; }

 private:
  PerfModel() = default;

  ModelConfig config_;
  HardwareProfile hardware_;
  // Per step, from engine/model_cost.h: a new token's projections, one attended pair, one row of logits.
  double projection_flops_ = 0;
  double attention_flops_per_pair_ = 0;
  double lm_head_flops_ = 0;
  double weight_bytes_ = 0;
  double kv_bytes_per_token_ = 0;
  int64_t kv_blocks_ = 0;
  int block_size_ = 16;
};

}  // namespace recgpt::capacity
