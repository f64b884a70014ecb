#include "cuda_kernels/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory_resource>
#include <new>
#include <string>
#include <vector>

#include "common/cuda_status.h"
#include "cuda_kernels/cublas_library.h"
#include "cuda_kernels/device_buffer.h"
#include "cuda_kernels/device_weights.h"
#include "cuda_kernels/kernels.h"
#include "cuda_kernels/step_graphs.h"
#include "cuda_kernels/step_inputs.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"

namespace recgpt {
namespace {

using cuda::bf16;
using cuda::DeviceBuffer;
using cuda::DeviceMatrix;

constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
constexpr size_t kKvAlignmentBytes = 4096;  // KvCache's array alignment

cuda::CacheType cache_type_of(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return cuda::CacheType::kBF16;
    case DType::kFP8E4M3: return cuda::CacheType::kFP8E4M3;
    default: return cuda::CacheType::kF32;  // KvCacheConfig::validate admits no other
  }
}

Result<cuda::Activation> activation_of(const std::string& name) {
  if (name == "gelu") return cuda::Activation::kGelu;
  if (name == "gelu_pytorch_tanh") return cuda::Activation::kGeluTanh;
  if (name == "silu") return cuda::Activation::kSilu;
  if (name == "relu") return cuda::Activation::kRelu;
  return unimplemented("the CUDA backend has no activation '" + name + "'");
}

// Activations of a step, grown to the largest step seen. [T] tokens, [R] logit rows, [E] entities.
struct StepBuffers {
  DeviceBuffer inputs;                        // the packed StepInputs
  DeviceBuffer residual;                      // f32 [T, hidden]
  DeviceBuffer normed;                        // bf16 [max(T, R), hidden]
  DeviceBuffer qkv;                           // f32 [T, (heads + 2 kv_heads) * head_dim]
  DeviceBuffer query;                         // f32 [T, heads * head_dim]
  DeviceBuffer attention;                     // bf16 [T, heads * head_dim]
  DeviceBuffer attention_workspace;           // the splits' partial results
  DeviceBuffer gate_up;                       // f32 [T, 2 intermediate]
  DeviceBuffer mlp;                           // bf16 [T, intermediate]
  DeviceBuffer adaptor_inner, adaptor_outer;  // f32 [E, adaptor hidden], [E, hidden]
  DeviceBuffer logits;                        // f32 [R, vocab]
};

// Host memory the GPU copies into at the bus's rate: ordinary allocations, page-locked with cudaHostRegister, for
// every device's context (portable: the step thread's current device need not be the backend's). Where locking
// fails (the system's limit on locked memory, say) the memory stays pageable and works, more slowly. Stateless,
// so one instance serves every backend and outlives them all.
class PageLockedHostMemory final : public std::pmr::memory_resource {
  static constexpr std::align_val_t kPageAlignment{4096};

  void* do_allocate(size_t bytes, size_t) override {  // any alignment up to a page
    bytes = std::max<size_t>(bytes, 1);
    void* memory = ::operator new(bytes, kPageAlignment);
    // A failure is CUDA's last error too, which the next launch check would report as its own: cleared.
    if (cudaHostRegister(memory, bytes, cudaHostRegisterPortable) != cudaSuccess) cudaGetLastError();
    return memory;
  }
  void do_deallocate(void* memory, size_t, size_t) override {
    if (cudaHostUnregister(memory) != cudaSuccess) cudaGetLastError();  // not locked: nothing to undo
    ::operator delete(memory, kPageAlignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

// Device views of the packed StepInputs.
struct StepPointers {
  const int64_t* slots;
  const int32_t *tokens, *entity_rows, *positions, *context, *table_offsets, *logit_rows, *tile_first_rows,
      *tile_row_counts, *prompt_tile_first_rows, *prompt_tile_row_counts, *split_tokens, *block_tables;
  const float* entity_vectors;
};

struct StepShape {
  int64_t tokens = 0, logit_rows = 0, entities = 0, tiles = 0, prompt_tiles = 0;
  int max_tile_rows = 1, max_prompt_tile_rows = 1;
  int splits = 1;
  StepPointers pointers{};
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelFiles& model, int device, const cuda::CublasLibrary& cublas, bool tensor_core_prompts)
      : model_(model),
        config_(model.config()),
        device_(device),
        cublas_library_(cublas),
        prompt_tile_rows_(tensor_core_prompts ? cuda::kPromptTileRows : 0) {}

  ~CudaBackend() override {
    CudaDeviceGuard guard(device_);
    graphs_.clear();
    if (cublas_ != nullptr) cublas_library_.destroy(cublas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status open(cuda::DeviceWeights weights) {
    weights_ = std::move(weights);
    RECGPT_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "create a stream"));
    RECGPT_RETURN_IF_ERROR(cublas_library_.check(cublas_library_.create(&cublas_), "create"));
    RECGPT_RETURN_IF_ERROR(cublas_library_.check(cublas_library_.set_stream(cublas_, stream_), "set the stream"));
    // A workspace of our own: cuBLAS must not allocate while a step graph is captured.
    RECGPT_ASSIGN_OR_RETURN(cublas_workspace_, DeviceBuffer::allocate(kCublasWorkspaceBytes));
    RECGPT_RETURN_IF_ERROR(cublas_library_.check(
        cublas_library_.set_workspace(cublas_, cublas_workspace_.as<void>(), cublas_workspace_.bytes()),
        "set the workspace"));
    RECGPT_RETURN_IF_ERROR(cuda_status(
        cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device_), "count multiprocessors"));
    if (config_.entity_adaptor) {
      RECGPT_ASSIGN_OR_RETURN(adaptor_activation_, activation_of(config_.entity_adaptor->activation));
    }
    return Status::ok();
  }

  std::string_view name() const override { return "cuda"; }

  std::pmr::memory_resource* logits_memory() const override {
    static PageLockedHostMemory memory;
    return &memory;
  }

  Result<KvCache> create_kv_cache(const KvCacheConfig& config) override {
    CudaDeviceGuard guard(device_);
    const int device = device_;
    return KvCache::create(config, [device](size_t bytes) -> Result<KvMemory> {
      RECGPT_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::allocate(bytes + kKvAlignmentBytes));
      RECGPT_RETURN_IF_ERROR(cuda_status(cudaMemset(buffer.as<void>(), 0, buffer.bytes()), "clear the KV cache"));
      // Finished before the backend's non-blocking stream, which does not wait for the legacy one, writes to it.
      RECGPT_RETURN_IF_ERROR(cuda_status(cudaDeviceSynchronize(), "clear the KV cache"));
      auto owner = std::make_shared<DeviceBuffer>(std::move(buffer));
      const auto address = reinterpret_cast<uintptr_t>(owner->as<void>());
      auto* data =
          reinterpret_cast<std::byte*>((address + kKvAlignmentBytes - 1) / kKvAlignmentBytes * kKvAlignmentBytes);
      return KvMemory{data, bytes, device, owner};
    });
  }

  Status forward(const Batch& batch, KvCache& kv_cache, HostLogits& logits) override {
    RECGPT_RETURN_IF_ERROR(validate_batch(batch, model_, kv_cache));
    if (kv_cache.cuda_device() != device_) {
      return invalid_argument("the KV cache is not in the memory of CUDA device " + std::to_string(device_) +
                              " (make it with this backend's create_kv_cache)");
    }
    logits.resize(static_cast<size_t>(batch.num_logit_rows() * config_.vocab_size));
    if (batch.num_tokens() == 0) return Status::ok();
    CudaDeviceGuard guard(device_);
    const int32_t entity_token_id = config_.entity_adaptor ? config_.entity_adaptor->entity_token_id : -1;
    const int group = config_.num_attention_heads / config_.num_key_value_heads;
    // The tensor-core kernel runs a block per (tile, query head): worth it from one block per multiprocessor on.
    const cuda::PromptTiling prompt{prompt_tile_rows_,
                                    (multiprocessors_ + config_.num_attention_heads - 1) / config_.num_attention_heads};
    cuda::StepInputs inputs =
        cuda::plan_step(batch, kv_cache.config().block_size, entity_token_id, cuda::rows_per_tile(group), prompt);
    const cuda::AttentionSplits splits =
        cuda::attention_splits(inputs.num_tiles(), config_.num_key_value_heads, inputs.max_context, multiprocessors_);
    inputs.split_tokens = splits.split_tokens;
    const cuda::StepLayout layout = cuda::layout_of(inputs);
    StepShape shape;
    shape.tokens = inputs.num_tokens();
    shape.logit_rows = inputs.num_logit_rows();
    shape.tiles = inputs.num_tiles();
    shape.max_tile_rows = inputs.max_tile_rows;
    shape.prompt_tiles = inputs.num_prompt_tiles();
    shape.max_prompt_tile_rows = inputs.max_prompt_tile_rows;
    shape.entities = config_.entity_adaptor ? inputs.num_entities(config_.entity_adaptor->entity_dim) : 0;
    shape.splits = splits.splits;
    RECGPT_RETURN_IF_ERROR(reserve(shape, layout));
    shape.pointers = pointers_in(layout);
    packed_inputs_.resize(layout.total_bytes);
    cuda::pack(inputs, layout, packed_inputs_.data());
    RECGPT_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(buffers_.inputs.as<void>(), packed_inputs_.data(),
                                                       layout.total_bytes, cudaMemcpyHostToDevice, stream_),
                                       "upload the step's inputs"));
    if (is_replayable(batch, shape)) {
      const KvCacheConfig& cache_config = kv_cache.config();
      const cuda::StepGraphKey key{shape.tokens,
                                   shape.logit_rows,
                                   shape.tiles,
                                   shape.max_tile_rows,
                                   shape.splits,
                                   kv_cache.storage_data(),
                                   kv_cache.array_stride_bytes(),
                                   cache_config.block_size,
                                   static_cast<int>(cache_config.dtype),
                                   cache_config.key_scale,
                                   cache_config.value_scale};
      const Status replayed = graphs_.run(key, stream_, [&] { return enqueue_step(shape, kv_cache, nullptr); });
      // A step that cannot be captured (a CUDA failure in the capture itself) still runs, uncaptured.
      if (!replayed.is_ok()) RECGPT_RETURN_IF_ERROR(enqueue_step(shape, kv_cache, nullptr));
    } else {
      RECGPT_RETURN_IF_ERROR(enqueue_step(shape, kv_cache, batch.after_layer));
    }
    if (!logits.empty()) {
      RECGPT_RETURN_IF_ERROR(
          cuda_status(cudaMemcpyAsync(logits.data(), buffers_.logits.as<void>(), logits.size() * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream_),
                      "download the logits"));
    }
    return cuda_status(cudaStreamSynchronize(stream_), "run a step");
  }

 private:
  // Decode steps (one token a sequence, its last logits, no entity, no per-layer callback) replay graphs.
  static bool is_replayable(const Batch& batch, const StepShape& shape) {
    if (batch.after_layer || shape.entities > 0) return false;
    for (const SequenceStep& step : batch.sequences) {
      if (step.tokens.size() != 1 || step.logits != LogitsWanted::kLast) return false;
    }
    return true;
  }

  // Grows every buffer to the step; a buffer that moved drops the captured graphs (they read the old address).
  Status reserve(const StepShape& shape, const cuda::StepLayout& layout) {
    const auto tokens = static_cast<size_t>(shape.tokens);
    const auto logit_rows = static_cast<size_t>(shape.logit_rows);
    const auto entities = static_cast<size_t>(shape.entities);
    const size_t hidden = config_.hidden_size, intermediate = config_.intermediate_size;
    const size_t q_width = static_cast<size_t>(config_.num_attention_heads) * config_.head_dim;
    const size_t qkv_width = q_width + 2 * static_cast<size_t>(config_.num_key_value_heads) * config_.head_dim;
    const size_t adaptor_hidden = config_.entity_adaptor ? config_.entity_adaptor->hidden_dim : 0;
    const std::pair<DeviceBuffer*, size_t> wanted[] = {
        {&buffers_.inputs, layout.total_bytes},
        {&buffers_.residual, tokens * hidden * sizeof(float)},
        {&buffers_.normed, std::max(tokens, logit_rows) * hidden * sizeof(bf16)},
        {&buffers_.qkv, tokens * qkv_width * sizeof(float)},
        {&buffers_.query, tokens * q_width * sizeof(float)},
        {&buffers_.attention, tokens * q_width * sizeof(bf16)},
        {&buffers_.attention_workspace,
         cuda::attention_workspace_bytes(shape.tiles * shape.max_tile_rows, config_.num_attention_heads,
                                         config_.head_dim, shape.splits)},
        {&buffers_.gate_up, tokens * 2 * intermediate * sizeof(float)},
        {&buffers_.mlp, tokens * intermediate * sizeof(bf16)},
        {&buffers_.adaptor_inner, entities * adaptor_hidden * sizeof(float)},
        {&buffers_.adaptor_outer, entities * hidden * sizeof(float)},
        {&buffers_.logits, logit_rows * static_cast<size_t>(config_.vocab_size) * sizeof(float)},
    };
    for (const auto& [buffer, bytes] : wanted) {
      RECGPT_ASSIGN_OR_RETURN(bool moved, buffer->reserve(bytes));
      if (moved) graphs_.clear();
    }
    return Status::ok();
  }

  StepPointers pointers_in(const cuda::StepLayout& layout) const {
    const auto* base = buffers_.inputs.as<std::byte>();
    auto at = [base](size_t offset) { return reinterpret_cast<const int32_t*>(base + offset); };
    return {reinterpret_cast<const int64_t*>(base + layout.slots),
            at(layout.tokens),
            at(layout.entity_rows),
            at(layout.positions),
            at(layout.context),
            at(layout.table_offsets),
            at(layout.logit_rows),
            at(layout.tile_first_rows),
            at(layout.tile_row_counts),
            at(layout.prompt_tile_first_rows),
            at(layout.prompt_tile_row_counts),
            at(layout.split_tokens),
            at(layout.block_tables),
            reinterpret_cast<const float*>(base + layout.entity_vectors)};
  }

  // y [rows, w.rows] f32 = x [rows, w.columns] · wᵀ, added into y when `accumulate` (the residual adds of a
  // layer happen here). x is bf16 for bf16 weights, f32 for f32 ones.
  Status multiply(const void* x, int64_t rows, const DeviceMatrix& w, float* y, bool accumulate) {
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const cudaDataType type = w.is_f32 ? CUDA_R_32F : CUDA_R_16BF;
    return cublas_library_.check(
        cublas_library_.gemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, w.rows, static_cast<int>(rows), w.columns, &alpha,
                             w.memory.as<void>(), type, w.columns, x, type, w.columns, &beta, y, CUDA_R_32F, w.rows,
                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "GEMM");
  }

  // Every device operation of a step, on stream_. With `after_layer`, waits for each layer and calls it.
  Status enqueue_step(const StepShape& shape, KvCache& kv_cache, const std::function<void(int32_t)>& after_layer) {
    const StepPointers& p = shape.pointers;
    const float* adaptor_rows = nullptr;
    const float* adaptor_bias = nullptr;
    if (shape.entities > 0) {
      const cuda::DeviceAdaptorWeights& adaptor = *weights_.adaptor;
      auto* inner = buffers_.adaptor_inner.as<float>();
      RECGPT_RETURN_IF_ERROR(multiply(p.entity_vectors, shape.entities, adaptor.fc1, inner, false));
      RECGPT_RETURN_IF_ERROR(cuda::bias_activation(inner, adaptor.fc1_bias.as<float>(), shape.entities,
                                                   adaptor.fc1.rows, adaptor_activation_, stream_));
      RECGPT_RETURN_IF_ERROR(multiply(inner, shape.entities, adaptor.fc2, buffers_.adaptor_outer.as<float>(), false));
      adaptor_rows = buffers_.adaptor_outer.as<float>();
      adaptor_bias = adaptor.fc2_bias.as<float>();
    }
    RECGPT_RETURN_IF_ERROR(cuda::embed_tokens(p.tokens, p.entity_rows, shape.tokens,
                                              weights_.embed_tokens.memory.as<bf16>(), adaptor_rows, adaptor_bias,
                                              config_.hidden_size, buffers_.residual.as<float>(), stream_));
    for (int layer = 0; layer < config_.num_hidden_layers; ++layer) {
      RECGPT_RETURN_IF_ERROR(enqueue_layer(layer, shape, kv_cache));
      if (after_layer) {
        RECGPT_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(stream_), "run a layer"));
        after_layer(layer);
      }
    }
    if (shape.logit_rows == 0) return Status::ok();
    auto* normed = buffers_.normed.as<bf16>();
    RECGPT_RETURN_IF_ERROR(cuda::rms_norm(buffers_.residual.as<float>(), p.logit_rows, shape.logit_rows,
                                          config_.hidden_size, weights_.final_norm.as<float>(), eps(), normed,
                                          stream_));
    return multiply(normed, shape.logit_rows, weights_.output_matrix(), buffers_.logits.as<float>(), false);
  }

  Status enqueue_layer(int index, const StepShape& shape, KvCache& kv_cache) {
    const cuda::DeviceLayerWeights& layer = weights_.layers[index];
    const StepPointers& p = shape.pointers;
    const int64_t tokens = shape.tokens;
    auto* residual = buffers_.residual.as<float>();
    auto* normed = buffers_.normed.as<bf16>();
    const cuda::HeadShape heads{config_.num_attention_heads, config_.num_key_value_heads, config_.head_dim};
    const KvCacheConfig& cache_config = kv_cache.config();
    const cuda::PagedCache cache{kv_cache.key_data(index), kv_cache.value_data(index),
                                 cache_type_of(cache_config.dtype), cache_config.key_scale, cache_config.value_scale};

    RECGPT_RETURN_IF_ERROR(cuda::rms_norm(residual, nullptr, tokens, config_.hidden_size, layer.input_norm.as<float>(),
                                          eps(), normed, stream_));
    RECGPT_RETURN_IF_ERROR(multiply(normed, tokens, layer.qkv, buffers_.qkv.as<float>(), false));
    RECGPT_RETURN_IF_ERROR(cuda::qk_norm_rope_store(
        buffers_.qkv.as<float>(), tokens, heads, layer.q_norm.as<float>(), layer.k_norm.as<float>(), eps(), p.positions,
        weights_.rope_inv_freq.as<float>(), p.slots, buffers_.query.as<float>(), cache, stream_));
    const cuda::AttentionShape attention{heads, cache_config.block_size,
                                         1.0f / std::sqrt(static_cast<float>(config_.head_dim))};
    if (shape.tiles > 0) {
      const cuda::AttentionRows rows{
          buffers_.query.as<float>(), p.context,      p.table_offsets, p.block_tables, p.tile_first_rows,
          p.tile_row_counts,          p.split_tokens, tokens,          shape.tiles,    shape.max_tile_rows};
      RECGPT_RETURN_IF_ERROR(cuda::paged_attention(rows, attention, cache, shape.splits,
                                                   buffers_.attention_workspace.as<void>(),
                                                   buffers_.attention.as<bf16>(), stream_));
    }
    if (shape.prompt_tiles > 0) {
      const cuda::AttentionRows rows{
          buffers_.query.as<float>(), p.context, p.table_offsets, p.block_tables,     p.prompt_tile_first_rows,
          p.prompt_tile_row_counts,   nullptr,   tokens,          shape.prompt_tiles, shape.max_prompt_tile_rows};
      RECGPT_RETURN_IF_ERROR(cuda::prompt_attention(rows, attention, cache, buffers_.attention.as<bf16>(), stream_));
    }
    RECGPT_RETURN_IF_ERROR(multiply(buffers_.attention.as<bf16>(), tokens, layer.o, residual, true));

    RECGPT_RETURN_IF_ERROR(cuda::rms_norm(residual, nullptr, tokens, config_.hidden_size,
                                          layer.post_attention_norm.as<float>(), eps(), normed, stream_));
    RECGPT_RETURN_IF_ERROR(multiply(normed, tokens, layer.gate_up, buffers_.gate_up.as<float>(), false));
    RECGPT_RETURN_IF_ERROR(cuda::silu_mul(buffers_.gate_up.as<float>(), tokens, config_.intermediate_size,
                                          buffers_.mlp.as<bf16>(), stream_));
    return multiply(buffers_.mlp.as<bf16>(), tokens, layer.down, residual, true);
  }

  float eps() const { return static_cast<float>(config_.rms_norm_eps); }

  const ModelFiles& model_;
  const ModelConfig& config_;
  const int device_;
  const cuda::CublasLibrary& cublas_library_;
  cuda::DeviceWeights weights_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer cublas_workspace_;
  int multiprocessors_ = 1;
  cuda::Activation adaptor_activation_ = cuda::Activation::kGelu;
  const int prompt_tile_rows_;  // > 0: long prompt chunks go to the tensor-core kernel in tiles of this many rows
  StepBuffers buffers_;
  std::vector<std::byte> packed_inputs_;
  cuda::StepGraphs graphs_;
};

// RECGPT_CUDA_PROMPT_ATTENTION: "tensor_cores" (the default: long prompt chunks through prompt_attention, where
// the head size has a kernel; checked on an H200 against the CPU and transformers, docs/benchmarks.md) or "simt"
// (every chunk through paged_attention).
Result<bool> tensor_core_prompts_wanted(const cuda::HeadShape& heads) {
  const char* chosen = std::getenv("RECGPT_CUDA_PROMPT_ATTENTION");
  const std::string choice = chosen != nullptr ? chosen : "tensor_cores";
  if (choice == "simt") return false;
  if (choice == "tensor_cores") return cuda::prompt_attention_supports(heads);
  return invalid_argument("RECGPT_CUDA_PROMPT_ATTENTION must be simt or tensor_cores, got '" + choice + "'");
}

}  // namespace

Result<std::unique_ptr<Backend>> create_cuda_backend(const ModelFiles& model, const BackendOptions& options) {
  int count = 0;
  if (cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess || count == 0) {
    cudaGetLastError();
    return unavailable(std::string("no CUDA device: ") +
                       (error != cudaSuccess ? cudaGetErrorString(error) : "the runtime sees none"));
  }
  if (options.cuda_device < 0 || options.cuda_device >= count) {
    return invalid_argument("CUDA device " + std::to_string(options.cuda_device) + " is not one of the " +
                            std::to_string(count) + " this process sees");
  }
  const ModelConfig& config = model.config();
  const cuda::HeadShape heads{config.num_attention_heads, config.num_key_value_heads, config.head_dim};
  if (!cuda::attention_supports(heads) || config.head_dim % 2 != 0) {
    return unimplemented("the CUDA attention kernel has no variant for head_dim " + std::to_string(config.head_dim) +
                         " with " + std::to_string(config.num_attention_heads) + " query heads on " +
                         std::to_string(config.num_key_value_heads) + " KV heads");
  }
  RECGPT_ASSIGN_OR_RETURN(bool tensor_core_prompts, tensor_core_prompts_wanted(heads));
  RECGPT_ASSIGN_OR_RETURN(const cuda::CublasLibrary* cublas, cuda::CublasLibrary::get());
  CudaDeviceGuard guard(options.cuda_device);
  RECGPT_ASSIGN_OR_RETURN(cuda::DeviceWeights weights, cuda::upload_weights(model));
  auto backend = std::make_unique<CudaBackend>(model, options.cuda_device, *cublas, tensor_core_prompts);
  RECGPT_RETURN_IF_ERROR(backend->open(std::move(weights)));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace recgpt
