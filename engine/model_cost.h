// What a model costs to run, from its config alone: how many parameters it has, what one token's KV cache
// holds, and the floating-point work of one token. `recgpt bench engine` uses these for its rooflines and the
// capacity planner (capacity/) for its performance model, so both read the same formulas.
#pragma once

#include <cstdint>

#include "engine/model_config.h"

namespace recgpt {

struct ModelCost {
  int64_t parameters = 0;             // every tensor of the checkpoint: embeddings, decoder, final norm, untied LM
                                      // head and the entity adaptor
  int64_t decoder_parameters = 0;     // the layers alone (what HF calls non-embedding parameters, less the norm)
  int64_t lm_head_parameters = 0;     // vocab_size * hidden_size, read by every step whether tied or not
  int64_t kv_elements_per_token = 0;  // K and V of every layer: 2 * layers * kv_heads * head_dim
};

ModelCost model_cost(const ModelConfig& config);

// Floating-point operations (multiply-adds x2) of one token through every layer's projections, plus its
// attention over `context` earlier tokens (QK^T and PV). The LM head is not included: see lm_head_flops.
double decoder_flops_per_token(const ModelConfig& config, double context);
// One row of logits: 2 * vocab_size * hidden_size.
double lm_head_flops(const ModelConfig& config);

}  // namespace recgpt
