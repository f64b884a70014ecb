// The per-token kernels of a layer: embeddings, RMSNorm, the fused q/k norm + RoPE + KV store, SwiGLU and the
// adaptor's bias and activation. Memory-bound and small next to the GEMMs: one pass over their data each.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cuda_kernels/device_math.cuh"
#include "cuda_kernels/kernels.h"

namespace recgpt::cuda {
namespace {

constexpr int kRowThreads = 256;

__global__ void embed_tokens_kernel(const int32_t* tokens, const int32_t* entity_rows, const bf16* table,
                                    const float* adaptor, const float* adaptor_bias, int hidden, float* out) {
  const int64_t row = blockIdx.x;
  const int32_t entity = entity_rows[row];
  float* target = out + row * hidden;
  if (entity >= 0) {
    const float* source = adaptor + static_cast<int64_t>(entity) * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) target[i] = source[i] + adaptor_bias[i];
  } else {
    const bf16* source = table + static_cast<int64_t>(tokens[row]) * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) target[i] = __bfloat162float(source[i]);
  }
}

__device__ float activate(float x, Activation activation) {
  switch (activation) {
    case Activation::kGelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case Activation::kGeluTanh: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case Activation::kSilu: return x / (1.0f + expf(-x));
    case Activation::kRelu: return x > 0.0f ? x : 0.0f;
  }
  return x;
}

__global__ void bias_activation_kernel(float* x, const float* bias, int64_t count, int width, Activation activation) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = activate(x[i] + bias[i % width], activation);
  }
}

__global__ void rms_norm_kernel(const float* x, const int32_t* source_rows, int width, const float* weight, float eps,
                                bf16* out) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const float* source = x + (source_rows != nullptr ? source_rows[row] : row) * int64_t{width};
  float squares = 0.0f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) squares += source[i] * source[i];
  const float inverse = rsqrtf(block_sum(squares, scratch) / static_cast<float>(width) + eps);
  bf16* target = out + row * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x)
    target[i] = __float2bfloat16_rn(source[i] * inverse * weight[i]);
}

// One warp per (token, head slot): slots [0, heads) are query heads, [heads, heads + kv_heads) key heads, the
// rest value heads. A lane takes the pairs (i, i + half) that rotate together.
template <typename CacheT>
__global__ void qk_norm_rope_store_kernel(const float* qkv, int64_t tokens, HeadShape shape, const float* q_norm,
                                          const float* k_norm, float eps, const int32_t* positions,
                                          const float* inv_freq, const int64_t* slots, float* query, CacheT* key_cache,
                                          CacheT* value_cache, float key_inverse_scale, float value_inverse_scale) {
  const int warps_per_block = blockDim.x / 32;
  const int slot_count = shape.heads + 2 * shape.kv_heads;
  const int64_t token = blockIdx.x;  // x: token counts can pass the 65535 that y allows
  const int head_slot = blockIdx.y * warps_per_block + threadIdx.x / 32;
  if (head_slot >= slot_count) return;  // the whole warp leaves together
  const int lane = threadIdx.x % 32, dim = shape.head_dim, half = dim / 2;
  const float* source = qkv + token * slot_count * dim + int64_t{head_slot} * dim;
  const int64_t cache_row = (slots[token] * shape.kv_heads) * dim;
  if (head_slot >= shape.heads + shape.kv_heads) {  // a value head: stored as is
    CacheT* target = value_cache + cache_row + int64_t{head_slot - shape.heads - shape.kv_heads} * dim;
    for (int i = lane; i < dim; i += 32) target[i] = from_float<CacheT>(source[i] * value_inverse_scale);
    return;
  }
  const bool is_query = head_slot < shape.heads;
  float squares = 0.0f;
  for (int i = lane; i < dim; i += 32) squares += source[i] * source[i];
  const float inverse = rsqrtf(warp_sum(squares) / static_cast<float>(dim) + eps);
  const float* weight = is_query ? q_norm : k_norm;
  const float position = static_cast<float>(positions[token]);
  for (int i = lane; i < half; i += 32) {
    const float first = source[i] * inverse * weight[i];
    const float second = source[i + half] * inverse * weight[i + half];
    float sine, cosine;
    sincosf(position * inv_freq[i], &sine, &cosine);
    const float rotated_first = first * cosine - second * sine;
    const float rotated_second = second * cosine + first * sine;
    if (is_query) {
      float* target = query + (token * shape.heads + head_slot) * dim;
      target[i] = rotated_first, target[i + half] = rotated_second;
    } else {
      CacheT* target = key_cache + cache_row + int64_t{head_slot - shape.heads} * dim;
      target[i] = from_float<CacheT>(rotated_first * key_inverse_scale);
      target[i + half] = from_float<CacheT>(rotated_second * key_inverse_scale);
    }
  }
}

__global__ void silu_mul_kernel(const float* gate_up, int64_t count, int width, bf16* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / width, column = i % width;
    const float gate = gate_up[row * 2 * width + column];
    const float up = gate_up[row * 2 * width + width + column];
    out[i] = __float2bfloat16_rn(gate / (1.0f + expf(-gate)) * up);
  }
}

// Grid-stride launches stop at this many blocks: enough to fill any current GPU.
unsigned stride_grid(int64_t count) { return static_cast<unsigned>(std::min<int64_t>(grid_size(count, 256), 4096)); }

}  // namespace

Status embed_tokens(const int32_t* tokens, const int32_t* entity_rows, int64_t rows, const bf16* table,
                    const float* adaptor, const float* adaptor_bias, int hidden, float* out, cudaStream_t stream) {
  if (rows == 0) return Status::ok();
  embed_tokens_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(tokens, entity_rows, table, adaptor,
                                                                               adaptor_bias, hidden, out);
  return launch_status("embed_tokens");
}

Status bias_activation(float* x, const float* bias, int64_t rows, int width, Activation activation,
                       cudaStream_t stream) {
  const int64_t count = rows * width;
  if (count == 0) return Status::ok();
  bias_activation_kernel<<<stride_grid(count), 256, 0, stream>>>(x, bias, count, width, activation);
  return launch_status("bias_activation");
}

Status rms_norm(const float* x, const int32_t* source_rows, int64_t rows, int width, const float* weight, float eps,
                bf16* out, cudaStream_t stream) {
  if (rows == 0) return Status::ok();
  rms_norm_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(x, source_rows, width, weight, eps, out);
  return launch_status("rms_norm");
}

Status qk_norm_rope_store(const float* qkv, int64_t tokens, HeadShape shape, const float* q_norm, const float* k_norm,
                          float eps, const int32_t* positions, const float* inv_freq, const int64_t* slots,
                          float* query, const PagedCache& cache, cudaStream_t stream) {
  if (tokens == 0) return Status::ok();
  constexpr int kWarpsPerBlock = 4;
  const dim3 grid(static_cast<unsigned>(tokens), grid_size(shape.heads + 2 * shape.kv_heads, kWarpsPerBlock));
  auto launch = [&](auto* typed_cache) {
    using CacheT = std::remove_pointer_t<decltype(typed_cache)>;
    qk_norm_rope_store_kernel<CacheT><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(
        qkv, tokens, shape, q_norm, k_norm, eps, positions, inv_freq, slots, query, static_cast<CacheT*>(cache.key),
        static_cast<CacheT*>(cache.value), 1.0f / cache.key_scale, 1.0f / cache.value_scale);
  };
  switch (cache.type) {
    case CacheType::kF32: launch(static_cast<float*>(nullptr)); break;
    case CacheType::kBF16: launch(static_cast<bf16*>(nullptr)); break;
    case CacheType::kFP8E4M3: launch(static_cast<__nv_fp8_e4m3*>(nullptr)); break;
  }
  return launch_status("qk_norm_rope_store");
}

Status silu_mul(const float* gate_up, int64_t rows, int width, bf16* out, cudaStream_t stream) {
  const int64_t count = rows * width;
  if (count == 0) return Status::ok();
  silu_mul_kernel<<<stride_grid(count), 256, 0, stream>>>(gate_up, count, width, out);
  return launch_status("silu_mul");
}

}  // namespace recgpt::cuda
