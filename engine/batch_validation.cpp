#include <algorithm>
#include <string>

#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"

namespace recgpt {
namespace {

std::string sequence_label(size_t index) { return "sequence " + std::to_string(index); }

Status validate_step(const SequenceStep& step, size_t index, const ModelConfig& config,
                     const KvCacheConfig& cache_config) {
  RECGPT_RETURN_IF_ERROR(
      validate_tokens(step.tokens, step.entity_vectors.size(), config).with_context(sequence_label(index)));
  int64_t end_position = static_cast<int64_t>(step.first_position) + static_cast<int64_t>(step.tokens.size());
  if (step.first_position < 0 || end_position > config.max_position_embeddings) {
    return invalid_argument(sequence_label(index) + ": positions up to " + std::to_string(end_position) +
                            " exceed max_position_embeddings " + std::to_string(config.max_position_embeddings));
  }
  int64_t blocks_needed = (end_position + cache_config.block_size - 1) / cache_config.block_size;
  if (static_cast<int64_t>(step.block_table.size()) < blocks_needed) {
    return invalid_argument(sequence_label(index) + ": block table has " + std::to_string(step.block_table.size()) +
                            " blocks, " + std::to_string(blocks_needed) + " needed");
  }
  bool blocks_in_pool = std::all_of(step.block_table.begin(), step.block_table.begin() + blocks_needed,
                                    [&](int32_t block) { return block >= 0 && block < cache_config.num_blocks; });
  if (!blocks_in_pool) return invalid_argument(sequence_label(index) + ": block id outside the KV pool");
  return Status::ok();
}

}  // namespace

Status validate_tokens(std::span<const int32_t> tokens, size_t num_entity_values, const ModelConfig& config) {
  int64_t num_entities = 0;
  for (int32_t token : tokens) {
    if (token < 0 || token >= config.vocab_size) {
      return invalid_argument("token id " + std::to_string(token) + " outside the vocabulary [0, " +
                              std::to_string(config.vocab_size) + ")");
    }
    if (config.entity_adaptor && token == config.entity_adaptor->entity_token_id) ++num_entities;
  }
  int64_t entity_dim = config.entity_adaptor ? config.entity_adaptor->entity_dim : 0;
  if (static_cast<int64_t>(num_entity_values) != num_entities * entity_dim) {
    return invalid_argument(std::to_string(num_entities) + " entity tokens need " +
                            std::to_string(num_entities * entity_dim) + " entity vector values, got " +
                            std::to_string(num_entity_values));
  }
  return Status::ok();
}

Status validate_batch(const Batch& batch, const ModelFiles& model, const KvCache& kv_cache) {
  const ModelConfig& config = model.config();
  const KvCacheConfig& cache_config = kv_cache.config();
  if (cache_config.num_layers != config.num_hidden_layers || cache_config.num_kv_heads != config.num_key_value_heads ||
      cache_config.head_dim != config.head_dim) {
    return invalid_argument("the KV cache holds " + std::to_string(cache_config.num_layers) + " layers of " +
                            std::to_string(cache_config.num_kv_heads) + " x " + std::to_string(cache_config.head_dim) +
                            " heads; the model needs " + std::to_string(config.num_hidden_layers) + " of " +
                            std::to_string(config.num_key_value_heads) + " x " + std::to_string(config.head_dim));
  }
  for (size_t index = 0; index < batch.sequences.size(); ++index) {
    RECGPT_RETURN_IF_ERROR(validate_step(batch.sequences[index], index, model.config(), kv_cache.config()));
  }
  return Status::ok();
}

}  // namespace recgpt
