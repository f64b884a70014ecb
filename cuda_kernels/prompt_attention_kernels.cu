// Tensor-core attention for prompt chunks, FlashAttention-2 style: a thread block takes up to kPromptTileRows
// consecutive rows of one sequence and one query head, walks the keys kKeys at a time up to its last row's causal
// end, and keeps each row's softmax running in registers. Keys and values are staged in shared memory as bf16 (from
// an f32, bf16 or FP8 cache); Q K^T and P V are m16n8k16 bf16 products with f32 accumulation, each warp taking 16
// rows. The SIMT kernel (attention_kernels.cu) reads every key once per 8 / group rows and multiplies on CUDA
// cores; this one reads it once per 64 rows and multiplies on tensor cores.
#include <algorithm>
#include <cmath>

#include "cuda_kernels/device_math.cuh"
#include "cuda_kernels/kernels.h"

namespace recgpt::cuda {
namespace {

constexpr int kWarps = kPromptTileRows / 16;  // each takes 16 of the tile's rows
constexpr int kThreads = 32 * kWarps;
constexpr int kKeys = 64;  // keys per step of the walk
constexpr int kPad = 8;    // bf16 padding per shared row: the fragment reads of a warp hit 32 different banks
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t pack_bf16(float low, float high) {
  __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
  return *reinterpret_cast<uint32_t*>(&pair);
}

__device__ __forceinline__ uint32_t shared_pair(const bf16* at) { return *reinterpret_cast<const uint32_t*>(at); }

// c (16x8 f32) += a (16x16 bf16, row-major) * b (16x8 bf16, column-major), the m16n8k16 tensor-core product. With
// lane = 4 g + t, the fragments (PTX ISA, mma.m16n8k16): a[0] row g, columns 2t and 2t + 1; a[1] the same of row
// g + 8; a[2] row g, columns 2t + 8 and 2t + 9; a[3] those of row g + 8. b0: k = 2t, 2t + 1 at n = g; b1: k = 2t + 8,
// 2t + 9. c[0], c[1]: row g, columns 2t, 2t + 1; c[2], c[3]: row g + 8.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename CacheT, int kHeadDim>
// At least 3 blocks per multiprocessor: 168 registers at head_dim 128 (172 unbounded, which fits only 2).
__global__ void __launch_bounds__(kThreads, 3)
    prompt_attention_kernel(AttentionRows rows, AttentionShape shape, const CacheT* key_cache,
                            const CacheT* value_cache, float key_scale, float value_scale, bf16* out) {
  static_assert(kHeadDim % 16 == 0 && kHeadDim <= 128, "k steps of 16; registers for at most 128");
  constexpr int kSteps = kHeadDim / 16;    // k steps of Q K^T
  constexpr int kDimTiles = kHeadDim / 8;  // n tiles of P V
  constexpr int kChunks = kHeadDim / 8;    // 8-element pieces of a key or value head
  __shared__ __align__(16) bf16 keys[kKeys][kHeadDim + kPad];
  __shared__ __align__(16) bf16 values_t[kHeadDim][kKeys + kPad];  // transposed: a fragment's keys are adjacent

  // Last tiles first: a sequence's later tiles walk more keys, and starting them early shortens the tail.
  const int tile = gridDim.x - 1 - blockIdx.x, head = blockIdx.y;
  const int heads = shape.heads.heads, kv_heads = shape.heads.kv_heads;
  const int kv_head = head / (heads / kv_heads);
  const int first_row = rows.tile_first_rows[tile];
  const int row_count = min(rows.tile_row_counts[tile], kPromptTileRows);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  // This lane's two rows of the tile (g and g + 8 of its warp's 16) and the keys each sees (its causal context).
  const int local_row[2] = {warp * 16 + g, warp * 16 + g + 8};
  int visible[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) visible[h] = local_row[h] < row_count ? rows.context[first_row + local_row[h]] : 0;
  const int keys_total = rows.context[first_row + row_count - 1];  // the last row sees the most
  // The keys this warp's rows see at most (its last row's context): past them its products would be all masked.
  const int warp_keys = warp * 16 < row_count ? rows.context[first_row + min(warp * 16 + 15, row_count - 1)] : 0;
  const int32_t* block_table = rows.block_tables + rows.table_offsets[first_row];
  const int block_size = shape.block_size;
  auto element_offset = [&](int position, int chunk) {
    const int64_t slot = int64_t{block_table[position / block_size]} * block_size + position % block_size;
    return (slot * kv_heads + kv_head) * kHeadDim + chunk * 8;
  };

  // Q as A fragments, scaled for a softmax in base 2 (and by the FP8 key scale, as keys are read unscaled).
  const float query_scale = shape.scale * key_scale * kLog2e;
  uint32_t query[kSteps][4];
#pragma unroll
  for (int step = 0; step < kSteps; ++step) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // i: (column half, row) = (i / 2, i % 2)
      const int row = local_row[i % 2], column = step * 16 + (i / 2) * 8 + 2 * t;
      float2 pair = make_float2(0.0f, 0.0f);
      if (row < row_count) {
        pair = *reinterpret_cast<const float2*>(rows.query + (int64_t{first_row + row} * heads + head) * kHeadDim +
                                                column);
      }
      query[step][i] = pack_bf16(pair.x * query_scale, pair.y * query_scale);
    }
  }

  float output[kDimTiles][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this lane's share: its quad holds the row's sum
  for (int key0 = 0; key0 < keys_total; key0 += kKeys) {
    __syncthreads();  // every warp is done with the previous step's keys and values
    // Keys: consecutive threads take consecutive pieces of one key (coalesced reads, conflict-free stores).
    for (int i = threadIdx.x; i < kKeys * kChunks; i += kThreads) {
      const int k = i / kChunks, chunk = i % kChunks, position = key0 + k;
      float part[8] = {};
      if (position < keys_total) load_floats<8>(key_cache + element_offset(position, chunk), part);
      const uint4 packed{pack_bf16(part[0], part[1]), pack_bf16(part[2], part[3]), pack_bf16(part[4], part[5]),
                         pack_bf16(part[6], part[7])};
      *reinterpret_cast<uint4*>(&keys[k][chunk * 8]) = packed;
    }
    // Values: consecutive threads take consecutive keys, so the transposed stores fall in different banks.
    for (int i = threadIdx.x; i < kKeys * kChunks; i += kThreads) {
      const int k = i % kKeys, chunk = i / kKeys, position = key0 + k;
      float part[8] = {};
      if (position < keys_total) load_floats<8>(value_cache + element_offset(position, chunk), part);
#pragma unroll
      for (int e = 0; e < 8; ++e) values_t[chunk * 8 + e][k] = __float2bfloat16_rn(part[e]);
    }
    __syncthreads();
    // A step wholly past this warp's rows (the causal triangle's far side, or a tile's missing rows) would leave
    // its softmax and output as they are: skip its products (the barriers above are every warp's).
    if (key0 >= warp_keys) continue;

    // Scores of this warp's 16 rows against the step's keys (base-2 logits).
    float score[kKeys / 8][4] = {};
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
      for (int step = 0; step < kSteps; ++step) {
        const bf16* key = &keys[n * 8 + g][step * 16 + 2 * t];
        mma_bf16(score[n], query[step], shared_pair(key), shared_pair(key + 8));
      }
    }
    // Causal mask and the running softmax of each row, whose scores are spread over the four lanes of a quad.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float step_max = -INFINITY;
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& value = score[n][2 * h + e];
          if (key0 + n * 8 + 2 * t + e >= visible[h]) value = -INFINITY;
          step_max = fmaxf(step_max, value);
        }
      }
      step_max = fmaxf(step_max, __shfl_xor_sync(kFullWarp, step_max, 1));
      step_max = fmaxf(step_max, __shfl_xor_sync(kFullWarp, step_max, 2));
      const float new_max = fmaxf(row_max[h], step_max);
      // A row that has seen no key yet keeps max -inf; its weights and rescale come out 0, never NaN.
      const float base = new_max == -INFINITY ? 0.0f : new_max;
      const float rescale = exp2f(row_max[h] - base);
      row_max[h] = new_max;
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& value = score[n][2 * h + e];
          value = exp2f(value - base);
          sum += value;
        }
      }
      row_sum[h] = row_sum[h] * rescale + sum;
#pragma unroll
      for (int d = 0; d < kDimTiles; ++d) {
        output[d][2 * h] *= rescale;
        output[d][2 * h + 1] *= rescale;
      }
    }
    // output += P V. The accumulators of two adjacent n tiles are, element for element, the A fragment of one
    // k step of 16 keys.
#pragma unroll
    for (int step = 0; step < kKeys / 16; ++step) {
      const uint32_t weights[4] = {pack_bf16(score[2 * step][0], score[2 * step][1]),
                                   pack_bf16(score[2 * step][2], score[2 * step][3]),
                                   pack_bf16(score[2 * step + 1][0], score[2 * step + 1][1]),
                                   pack_bf16(score[2 * step + 1][2], score[2 * step + 1][3])};
#pragma unroll
      for (int d = 0; d < kDimTiles; ++d) {
        const bf16* value = &values_t[d * 8 + g][step * 16 + 2 * t];
        mma_bf16(output[d], weights, shared_pair(value), shared_pair(value + 8));
      }
    }
  }

  // Normalise (the FP8 value scale too) and write the rows this tile has.
  float total[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    total[h] = row_sum[h];
    total[h] += __shfl_xor_sync(kFullWarp, total[h], 1);
    total[h] += __shfl_xor_sync(kFullWarp, total[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (local_row[h] >= row_count) continue;
    const float factor = total[h] > 0.0f ? value_scale / total[h] : 0.0f;
    bf16* row_out = out + (int64_t{first_row + local_row[h]} * heads + head) * kHeadDim;
#pragma unroll
    for (int d = 0; d < kDimTiles; ++d) {
      *reinterpret_cast<__nv_bfloat162*>(row_out + d * 8 + 2 * t) =
          __floats2bfloat162_rn(output[d][2 * h] * factor, output[d][2 * h + 1] * factor);
    }
  }
}

template <typename CacheT, int kHeadDim>
Status launch(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, bf16* out,
              cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(rows.tiles), static_cast<unsigned>(shape.heads.heads));
  prompt_attention_kernel<CacheT, kHeadDim>
      <<<grid, kThreads, 0, stream>>>(rows, shape, static_cast<const CacheT*>(cache.key),
                                      static_cast<const CacheT*>(cache.value), cache.key_scale, cache.value_scale, out);
  return launch_status("prompt_attention");
}

template <typename CacheT>
Status launch_for_head_dim(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, bf16* out,
                           cudaStream_t stream) {
  switch (shape.heads.head_dim) {
    case 32: return launch<CacheT, 32>(rows, shape, cache, out, stream);
    case 64: return launch<CacheT, 64>(rows, shape, cache, out, stream);
    case 128: return launch<CacheT, 128>(rows, shape, cache, out, stream);
  }
  return unimplemented("tensor-core prompt attention has no kernel for head_dim " +
                       std::to_string(shape.heads.head_dim));
}

}  // namespace

bool prompt_attention_supports(const HeadShape& shape) {
  const bool known_size = shape.head_dim == 32 || shape.head_dim == 64 || shape.head_dim == 128;
  return known_size && shape.kv_heads > 0 && shape.heads % shape.kv_heads == 0;
}

Status prompt_attention(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, bf16* out,
                        cudaStream_t stream) {
  if (!prompt_attention_supports(shape.heads)) {
    return unimplemented("tensor-core prompt attention supports head_dim 32, 64 or 128");
  }
  if (rows.tiles == 0) return Status::ok();
  if (rows.max_tile_rows < 1 || rows.max_tile_rows > kPromptTileRows) {
    return invalid_argument("prompt attention tiles hold 1 to " + std::to_string(kPromptTileRows) + " rows, got " +
                            std::to_string(rows.max_tile_rows));
  }
  switch (cache.type) {
    case CacheType::kF32: return launch_for_head_dim<float>(rows, shape, cache, out, stream);
    case CacheType::kBF16: return launch_for_head_dim<bf16>(rows, shape, cache, out, stream);
    case CacheType::kFP8E4M3: return launch_for_head_dim<__nv_fp8_e4m3>(rows, shape, cache, out, stream);
  }
  return invalid_argument("unknown KV cache type");
}

}  // namespace recgpt::cuda
