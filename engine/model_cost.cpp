#include "engine/model_cost.h"

namespace recgpt {
namespace {

int64_t query_width(const ModelConfig& config) {
  return static_cast<int64_t>(config.num_attention_heads) * config.head_dim;
}
int64_t kv_width(const ModelConfig& config) {
  return static_cast<int64_t>(config.num_key_value_heads) * config.head_dim;
}

// q, k, v, o and the three MLP matrices of one layer.
int64_t projection_parameters(const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  return hidden * (query_width(config) + 2 * kv_width(config)) + query_width(config) * hidden +
         3 * hidden * config.intermediate_size;
}

}  // namespace

ModelCost model_cost(const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t layer_norms = 2 * hidden + 2 * static_cast<int64_t>(config.head_dim);  // input, post, q, k
  ModelCost cost;
  cost.decoder_parameters = config.num_hidden_layers * (projection_parameters(config) + layer_norms);
  cost.lm_head_parameters = static_cast<int64_t>(config.vocab_size) * hidden;
  cost.parameters = cost.lm_head_parameters + cost.decoder_parameters + hidden;  // embeddings, layers, norm
  if (!config.tie_word_embeddings) cost.parameters += cost.lm_head_parameters;
  if (config.entity_adaptor) {
    const int64_t inner = config.entity_adaptor->hidden_dim;
    cost.parameters += inner * config.entity_adaptor->entity_dim + inner + hidden * inner + hidden;
  }
  cost.kv_elements_per_token = 2 * static_cast<int64_t>(config.num_hidden_layers) * kv_width(config);
  return cost;
}

double decoder_flops_per_token(const ModelConfig& config, double context) {
  const double attention = 2.0 * static_cast<double>(query_width(config)) * context;
  return 2.0 * config.num_hidden_layers * (static_cast<double>(projection_parameters(config)) + attention);
}

double lm_head_flops(const ModelConfig& config) {
  return 2.0 * static_cast<double>(config.vocab_size) * config.hidden_size;
}

}  // namespace recgpt
