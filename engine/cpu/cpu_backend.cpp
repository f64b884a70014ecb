#include "engine/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/cpu/attention.h"
#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/ops.h"
#include "engine/cpu/thread_pool.h"
#include "engine/cpu/tiled_weights.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"

namespace recgpt {
namespace {

std::vector<float> to_f32_vector(const TensorView& view) {
  std::vector<float> values(static_cast<size_t>(view.num_elements()));
  if (view.dtype == DType::kF32) {
    std::memcpy(values.data(), view.data, values.size() * sizeof(float));
  } else {
    const auto* raw = static_cast<const uint16_t*>(view.data);
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] = view.dtype == DType::kBF16 ? bf16_to_f32(raw[i]) : f16_to_f32(raw[i]);
    }
  }
  return values;
}

// The weights every decode step streams: the layers' projections and the LM head.
std::vector<const TensorView*> decode_matrices(const ModelWeights& weights) {
  std::vector<const TensorView*> views;
  for (const LayerWeights& layer : weights.layers) {
    for (const TensorView* view : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.gate_proj,
                                   &layer.up_proj, &layer.down_proj}) {
      views.push_back(view);
    }
  }
  views.push_back(&weights.lm_head);
  return views;
}

// Hugging Face ACT2FN semantics; the name was validated by the config parser.
template <typename Activation>
void apply_each(float* values, int64_t count, Activation activation) {
  for (int64_t i = 0; i < count; ++i) values[i] = activation(values[i]);
}

void apply_activation(const std::string& name, float* values, int64_t count) {
  if (name == "gelu") {
    apply_each(values, count, [](float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); });
  } else if (name == "gelu_pytorch_tanh") {
    apply_each(values, count, [](float x) {
      return 0.5f * x * (1.0f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    });
  } else if (name == "silu") {
    apply_each(values, count, [](float x) { return x / (1.0f + std::exp(-x)); });
  } else {
    RECGPT_CHECK_MSG(name == "relu", name);
    apply_each(values, count, [](float x) { return x > 0.0f ? x : 0.0f; });
  }
}

struct LayerVectors {
  std::vector<float> input_norm, post_attention_norm, q_norm, k_norm;  // [hidden], [hidden], [head_dim] x2
};

// Activations of one step, grown on demand and reused across steps.
struct Scratch {
  std::vector<float> hidden, normed, query, key, value, attention, projected, gate, up;
  std::vector<int32_t> positions;
  RopeAngles rope;  // of `positions`
  std::vector<int64_t> slots;
};

class CpuBackend final : public Backend {
 public:
  // `tiled`: the weights packed for the kernels, made with this backend's pool.
  CpuBackend(const ModelFiles& model, std::unique_ptr<ThreadPool> pool, TiledWeights tiled)
      : model_(model),
        config_(model.config()),
        weights_(model.weights()),
        pool_(std::move(pool)),
        tiled_(std::move(tiled)) {
    for (const LayerWeights& layer : weights_.layers) {
      layer_vectors_.push_back({to_f32_vector(layer.input_layernorm), to_f32_vector(layer.post_attention_layernorm),
                                to_f32_vector(layer.q_norm), to_f32_vector(layer.k_norm)});
    }
    final_norm_ = to_f32_vector(weights_.norm);
    if (weights_.adaptor) {
      fc1_bias_ = to_f32_vector(weights_.adaptor->fc1_bias);
      fc2_bias_ = to_f32_vector(weights_.adaptor->fc2_bias);
    }
  }

  std::string_view name() const override { return "cpu"; }

  Result<KvCache> create_kv_cache(const KvCacheConfig& config) override {
    if (config.dtype != DType::kF32 && config.dtype != DType::kBF16) {
      return unimplemented("the CPU backend keeps KV in f32 or bf16, not " + std::string(dtype_name(config.dtype)));
    }
    return KvCache::create(config);
  }

  std::vector<std::span<const std::byte>> decode_weight_memory() const override {
    if (tiled_.packed_bytes() == 0) return {};
    std::vector<std::span<const std::byte>> memory;
    for (const TensorView* view : decode_matrices(weights_)) memory.push_back(tiled_.memory(*view));
    return memory;
  }

  Status forward(const Batch& batch, KvCache& kv_cache, HostLogits& logits) override {
    RECGPT_RETURN_IF_ERROR(validate_batch(batch, model_, kv_cache));
    int64_t num_tokens = batch.num_tokens();
    // No zero fill: compute_logits writes every row (a 32-sequence step's logits are 19 MB).
    logits.resize(static_cast<size_t>(batch.num_logit_rows() * config_.vocab_size));
    if (num_tokens == 0) return Status::ok();
    prepare_scratch(batch, kv_cache.config());
    embed(batch);
    for (int layer = 0; layer < config_.num_hidden_layers; ++layer) {
      run_layer(batch, kv_cache, layer, num_tokens);
      if (batch.after_layer) batch.after_layer(layer);
    }
    compute_logits(batch, logits);
    return Status::ok();
  }

 private:
  void prepare_scratch(const Batch& batch, const KvCacheConfig& cache_config) {
    size_t tokens = static_cast<size_t>(batch.num_tokens());
    size_t hidden = config_.hidden_size;
    size_t q_width = static_cast<size_t>(config_.num_attention_heads) * config_.head_dim;
    size_t kv_width = static_cast<size_t>(config_.num_key_value_heads) * config_.head_dim;
    scratch_.hidden.resize(tokens * hidden);
    scratch_.normed.resize(tokens * hidden);
    scratch_.query.resize(tokens * q_width);
    scratch_.key.resize(tokens * kv_width);
    scratch_.value.resize(tokens * kv_width);
    scratch_.attention.resize(tokens * q_width);
    scratch_.projected.resize(tokens * hidden);
    scratch_.gate.resize(tokens * config_.intermediate_size);
    scratch_.up.resize(tokens * config_.intermediate_size);
    scratch_.positions.clear();
    scratch_.slots.clear();
    for (const SequenceStep& step : batch.sequences) {
      for (int32_t i = 0; i < static_cast<int32_t>(step.tokens.size()); ++i) {
        int32_t position = step.first_position + i;
        scratch_.positions.push_back(position);
        int64_t block = step.block_table[position / cache_config.block_size];
        scratch_.slots.push_back(block * cache_config.block_size + position % cache_config.block_size);
      }
    }
    rope_angles(pool(), scratch_.positions.data(), static_cast<int64_t>(tokens), config_.head_dim, config_.rope_theta,
                scratch_.rope);
  }

  // Input embeddings: vocabulary rows, or adaptor(entity vector) at entity-token positions.
  void embed(const Batch& batch) {
    int64_t hidden = config_.hidden_size;
    std::vector<int64_t> entity_rows;
    std::vector<float> entity_inputs;
    int64_t row = 0;
    for (const SequenceStep& step : batch.sequences) {
      entity_inputs.insert(entity_inputs.end(), step.entity_vectors.begin(), step.entity_vectors.end());
      for (int32_t token : step.tokens) {
        if (config_.entity_adaptor && token == config_.entity_adaptor->entity_token_id) {
          entity_rows.push_back(row);
        } else {
          tiled_.copy_row_as_f32(weights_.embed_tokens, token, scratch_.hidden.data() + row * hidden);
        }
        ++row;
      }
    }
    if (entity_rows.empty()) return;
    const AdaptorWeights& adaptor = *weights_.adaptor;
    int64_t count = static_cast<int64_t>(entity_rows.size());
    int64_t adaptor_hidden = config_.entity_adaptor->hidden_dim;
    std::vector<float> inner(static_cast<size_t>(count * adaptor_hidden));
    std::vector<float> outer(static_cast<size_t>(count * hidden));
    matmul(pool(), entity_inputs.data(), count, tiled_.matrix(adaptor.fc1_weight), inner.data());
    for (int64_t e = 0; e < count; ++e)
      add_inplace(pool(), inner.data() + e * adaptor_hidden, fc1_bias_.data(), adaptor_hidden);
    apply_activation(config_.entity_adaptor->activation, inner.data(), count * adaptor_hidden);
    matmul(pool(), inner.data(), count, tiled_.matrix(adaptor.fc2_weight), outer.data());
    for (int64_t e = 0; e < count; ++e) {
      float* target = scratch_.hidden.data() + entity_rows[e] * hidden;
      std::memcpy(target, outer.data() + e * hidden, hidden * sizeof(float));
      add_inplace(pool(), target, fc2_bias_.data(), hidden);
    }
  }

  void run_layer(const Batch& batch, KvCache& kv_cache, int layer_index, int64_t num_tokens) {
    const LayerWeights& layer = weights_.layers[layer_index];
    const LayerVectors& vectors = layer_vectors_[layer_index];
    int64_t hidden = config_.hidden_size;
    int heads = config_.num_attention_heads;
    int kv_heads = config_.num_key_value_heads;
    int head_dim = config_.head_dim;
    float* x = scratch_.hidden.data();

    rms_norm(pool(), x, vectors.input_norm.data(), num_tokens, hidden, config_.rms_norm_eps, scratch_.normed.data());
    const MatmulTarget qkv[] = {{tiled_.matrix(layer.q_proj), scratch_.query.data()},
                                {tiled_.matrix(layer.k_proj), scratch_.key.data()},
                                {tiled_.matrix(layer.v_proj), scratch_.value.data()}};
    matmul_shared_input(pool(), scratch_.normed.data(), num_tokens, qkv);
    rms_norm(pool(), scratch_.query.data(), vectors.q_norm.data(), num_tokens * heads, head_dim, config_.rms_norm_eps,
             scratch_.query.data());
    rms_norm(pool(), scratch_.key.data(), vectors.k_norm.data(), num_tokens * kv_heads, head_dim, config_.rms_norm_eps,
             scratch_.key.data());
    rope_rotate_half(pool(), scratch_.query.data(), scratch_.rope, heads);
    rope_rotate_half(pool(), scratch_.key.data(), scratch_.rope, kv_heads);

    const KvCacheConfig& cache_config = kv_cache.config();
    KvLayerView kv_layer{kv_cache.key_data(layer_index), kv_cache.value_data(layer_index), cache_config.dtype,
                         cache_config.block_size,        cache_config.num_kv_heads,        cache_config.head_dim};
    store_kv(pool(), kv_layer, scratch_.slots.data(), scratch_.key.data(), scratch_.value.data(), num_tokens);
    attend(batch, kv_layer);

    matmul(pool(), scratch_.attention.data(), num_tokens, tiled_.matrix(layer.o_proj), scratch_.projected.data());
    add_inplace(pool(), x, scratch_.projected.data(), num_tokens * hidden);

    rms_norm(pool(), x, vectors.post_attention_norm.data(), num_tokens, hidden, config_.rms_norm_eps,
             scratch_.normed.data());
    const MatmulTarget gate_up[] = {{tiled_.matrix(layer.gate_proj), scratch_.gate.data()},
                                    {tiled_.matrix(layer.up_proj), scratch_.up.data()}};
    matmul_shared_input(pool(), scratch_.normed.data(), num_tokens, gate_up);
    silu_mul(pool(), scratch_.gate.data(), scratch_.up.data(), num_tokens * config_.intermediate_size,
             scratch_.gate.data());
    matmul(pool(), scratch_.gate.data(), num_tokens, tiled_.matrix(layer.down_proj), scratch_.projected.data());
    add_inplace(pool(), x, scratch_.projected.data(), num_tokens * hidden);
  }

  void attend(const Batch& batch, const KvLayerView& kv_layer) {
    int64_t q_width = static_cast<int64_t>(config_.num_attention_heads) * config_.head_dim;
    attention_sequences_.clear();
    int64_t row = 0;
    for (const SequenceStep& step : batch.sequences) {
      auto count = static_cast<int32_t>(step.tokens.size());
      if (count > 0) {
        attention_sequences_.push_back({scratch_.query.data() + row * q_width,
                                        scratch_.attention.data() + row * q_width, count, step.first_position,
                                        step.block_table});
      }
      row += count;
    }
    float scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
    paged_attention(pool(), kv_layer, attention_sequences_, config_.num_attention_heads, scale);
  }

  void compute_logits(const Batch& batch, std::span<float> logits) {
    int64_t hidden = config_.hidden_size;
    std::vector<float>& selected = scratch_.normed;  // [logit rows, hidden]; free after the last layer
    int64_t logit_rows = 0;
    int64_t row = 0;
    for (const SequenceStep& step : batch.sequences) {
      auto count = static_cast<int64_t>(step.tokens.size());
      int64_t first = step.logits == LogitsWanted::kAll ? 0 : count - 1;
      if (step.logits != LogitsWanted::kNone && count > 0) {
        std::copy(scratch_.hidden.begin() + (row + first) * hidden, scratch_.hidden.begin() + (row + count) * hidden,
                  selected.begin() + logit_rows * hidden);
        logit_rows += count - first;
      }
      row += count;
    }
    if (logit_rows == 0) return;
    rms_norm(pool(), selected.data(), final_norm_.data(), logit_rows, hidden, config_.rms_norm_eps, selected.data());
    matmul(pool(), selected.data(), logit_rows, tiled_.matrix(weights_.lm_head), logits.data());
  }

  ThreadPool& pool() { return *pool_; }

  const ModelFiles& model_;
  const ModelConfig& config_;
  const ModelWeights& weights_;
  std::unique_ptr<ThreadPool> pool_;
  TiledWeights tiled_;
  std::vector<LayerVectors> layer_vectors_;
  std::vector<float> final_norm_, fc1_bias_, fc2_bias_;
  Scratch scratch_;
  std::vector<AttentionSequence> attention_sequences_;
};

}  // namespace

Result<std::unique_ptr<Backend>> create_cpu_backend(const ModelFiles& model, const BackendOptions& options) {
  const ModelConfig& config = model.config();
  if (config.head_dim % 16 != 0 || config.head_dim > kMaxAttentionHeadDim) {
    return unimplemented("the CPU attention kernel needs head_dim to be a multiple of 16 up to " +
                         std::to_string(kMaxAttentionHeadDim) + "; the model has " + std::to_string(config.head_dim));
  }
  if (config.num_attention_heads / config.num_key_value_heads > kMaxAttentionRows) {
    return unimplemented("the CPU attention kernel supports at most " + std::to_string(kMaxAttentionRows) +
                         " query heads per KV head");
  }
  const int threads = ThreadPool::threads_for(options.num_threads);
  auto pool = std::make_unique<ThreadPool>(threads);
  TiledWeights tiled;
  if (options.repack_weights) {
    RECGPT_ASSIGN_OR_RETURN(tiled, TiledWeights::pack(*pool, model, decode_matrices(model.weights())));
  }
  return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(model, std::move(pool), std::move(tiled)));
}

}  // namespace recgpt
