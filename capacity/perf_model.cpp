#include "capacity/perf_model.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/model_cost.h"

namespace recgpt::capacity {

Result<PerfModel> PerfModel::create(const ModelConfig& config, const HardwareProfile& hardware, DType weight_dtype,
                                    DType kv_dtype, int block_size) {
  if (block_size < 1) return invalid_argument("block size must be at least 1");
  PerfModel model;
  model.config_ = config;
  model.hardware_ = hardware;
  const ModelCost cost = model_cost(config);
  model.block_size_ = block_size;
  // decoder_flops_per_token is linear in its context: the projections once per token, attention per pair.
  model.projection_flops_ = decoder_flops_per_token(config, 0);
  model.attention_flops_per_pair_ = decoder_flops_per_token(config, 1) - model.projection_flops_;
  model.lm_head_flops_ = lm_head_flops(config);
  model.weight_bytes_ = static_cast<double>(cost.parameters) * static_cast<double>(dtype_size(weight_dtype));
  model.kv_bytes_per_token_ =
      static_cast<double>(cost.kv_elements_per_token) * static_cast<double>(dtype_size(kv_dtype));
  const double kv_pool = hardware.memory_bytes * (1 - hardware.memory_reserved_fraction) - model.weight_bytes_;
  model.kv_blocks_ =
      static_cast<int64_t>(std::floor(std::max(kv_pool, 0.0) / (model.kv_bytes_per_token_ * block_size)));
  if (model.kv_blocks_ < 1) {
    std::ostringstream message;
    message << "the weights (" << model.weight_bytes_ / 1e9 << " GB) leave no room for a KV cache on '" << hardware.name
            << "' (" << hardware.memory_bytes / 1e9 << " GB, " << 100 * hardware.memory_reserved_fraction
            << "% reserved)";
    return invalid_argument(message.str());
  }
  return model;
}

double PerfModel::step_seconds(const StepWork& work) const {
  const int64_t new_tokens = work.prompt_tokens + work.decode_tokens;
  if (new_tokens == 0) return 0;
  const double attention_pairs = work.prompt_attention_pairs + work.decode_context_tokens;
  const double flops = static_cast<double>(new_tokens) * projection_flops_ +
                       attention_pairs * attention_flops_per_pair_ +
                       static_cast<double>(work.logits_rows) * lm_head_flops_;
  // Weights once; the KV read by decode tokens and by prompt tokens over earlier chunks is bounded by what the
  // step attends to, approximated as each decode context read once plus every new token's KV written once.
  const double bytes =
      weight_bytes_ + (work.decode_context_tokens + static_cast<double>(new_tokens)) * kv_bytes_per_token_;
  const double compute = flops / (hardware_.peak_flops * hardware_.flops_efficiency);
  const double memory = bytes / (hardware_.memory_bandwidth * hardware_.bandwidth_efficiency);
  return hardware_.step_overhead_seconds + std::max(compute, memory);
}

double PerfModel::transfer_seconds(int64_t tokens) const {
  if (tokens <= 0) return 0;
  return hardware_.kv_link_latency_seconds +
         static_cast<double>(tokens) * kv_bytes_per_token_ / hardware_.kv_link_bandwidth;
}

}  // namespace recgpt::capacity
