// Paged GQA attention for prompt and decode rows alike, split over the context for long ones (flash-decoding).
//
// A thread block takes one (row tile, KV head, split): a tile is one decode row, or up to kMaxTileQueries / group
// consecutive rows of one prompt, and the block serves every query head of the tile's rows that shares the KV
// head, so each key and value it reads is used by all of them. With one split the block writes the normalised
// output; with several it writes (max, sum, unnormalised output) per split and a second kernel combines them.
//
// Tiles of one row (decode rows) take one pass over their split (decode_attention_kernel): every position is in
// the row's causal context, so each warp keeps a running max and sum (online softmax). Its lanes copy keys and
// values into a ring of shared-memory stages with cp.async, three stages ahead of the one they read, from
// block-table entries staged in shared memory: bytes in flight without registers to hold them, and no dependent
// global load before each copy. That is what draws on HBM's bandwidth.
//
// Tiles of several rows (paged_attention_kernel) mask per row, so they take two passes: scores to shared memory,
// a block-wide softmax per query, then the values. Its four warps walk the split's positions, a group of lanes
// per position reading the key (16 bytes a lane where the head size allows), four positions a lane group in
// flight. Tiles of a few rows cut a prompt's reads of its keys and values by that many; long prompts go to the
// tensor-core kernel (prompt_attention_kernels.cu).
#include <algorithm>
#include <cmath>

#include "cuda_kernels/device_math.cuh"
#include "cuda_kernels/kernels.h"

namespace recgpt::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kUnroll = 4;  // position groups whose loads a warp has in flight at once

// Lanes that read one position's head: 8 elements a lane where that divides evenly (one 16-byte bf16 load), a
// power of two up to the warp.
template <int kHeadDim>
__host__ __device__ constexpr int lanes_per_position() {
  int lanes = 1;
  while (lanes * 2 <= kHeadDim / 8 && lanes * 2 <= 32) lanes *= 2;
  while (kHeadDim % lanes != 0) lanes /= 2;
  return lanes;
}

struct SplitOutput {
  float* partial_out;  // [rows, heads, splits, head_dim]
  float* partial_max;  // [rows, heads, splits]
  float* partial_sum;  // [rows, heads, splits]
};

// kQueryCap: the queries (tile rows x query heads per KV head) the registers are sized for: 2, 4 or 8.
template <typename CacheT, int kHeadDim, int kQueryCap>
__global__ void __launch_bounds__(kThreads)
    paged_attention_kernel(AttentionRows rows, AttentionShape shape, const CacheT* key_cache, const CacheT* value_cache,
                           float key_scale, float value_scale, int splits, SplitOutput split_output, bf16* out) {
  constexpr int kLanes = lanes_per_position<kHeadDim>();
  constexpr int kPerLane = kHeadDim / kLanes;
  constexpr int kPositionsPerWarp = 32 / kLanes;
  extern __shared__ float shared[];  // scores [queries][kMaxSplitTokens]; then per-warp outputs [kWarps][queries][D]
  __shared__ float scratch[kWarps];
  __shared__ float query_max[kMaxTileQueries], query_sum[kMaxTileQueries];

  const int tile = blockIdx.x;                  // x: tiles can pass the 65535 that y and z allow
  if (rows.tile_row_counts[tile] == 1) return;  // decode_attention_kernel's
  const int kv_head = blockIdx.y, split = blockIdx.z;
  const int heads = shape.heads.heads, kv_heads = shape.heads.kv_heads, group = heads / kv_heads;
  const int first_row = rows.tile_first_rows[tile];
  // Query j: row first_row + j / group, head j % group. Clamped to what the registers, shared memory and split
  // workspace were sized for: a tile longer than max_tile_rows is a caller's bug, never an overrun.
  const int queries = min(min(rows.tile_row_counts[tile], rows.max_tile_rows) * group, kQueryCap);
  // The (row, head) index of query j in [rows, heads]: its output lives there.
  auto head_index = [&](int j) {
    return int64_t{first_row + j / group} * heads + int64_t{kv_head} * group + j % group;
  };
  // Its partial results: in [tiles * max_tile_rows, heads], so that rows no tile holds (a prompt's rows that
  // another kernel serves) take no workspace.
  auto partial_index = [&](int j) {
    return (int64_t{tile} * rows.max_tile_rows + j / group) * heads + int64_t{kv_head} * group + j % group;
  };
  const int split_tokens = *rows.split_tokens;
  const int begin = split * split_tokens;
  const int last_row = first_row + rows.tile_row_counts[tile] - 1;              // the tile's longest context
  const int count = min(rows.context[last_row], begin + split_tokens) - begin;  // positions of this split
  if (count <= 0) {  // only when splits > 1: an empty split, skipped by the combine
    for (int j = threadIdx.x; j < queries; j += kThreads) {
      split_output.partial_max[partial_index(j) * splits + split] = -INFINITY;
      split_output.partial_sum[partial_index(j) * splits + split] = 0.0f;
    }
    return;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int part = lane % kLanes, slot_in_warp = lane / kLanes;
  const int32_t* block_table = rows.block_tables + rows.table_offsets[first_row];  // one sequence per tile
  const int block_size = shape.block_size;
  auto element_offset = [&](int index) {  // of this lane's elements of position begin + index
    const int position = begin + index;
    const int64_t slot = int64_t{block_table[position / block_size]} * block_size + position % block_size;
    return (slot * kv_heads + kv_head) * kHeadDim + part * kPerLane;
  };

  float query[kQueryCap][kPerLane];
  int query_end[kQueryCap];  // positions before this one are the query's causal context
#pragma unroll
  for (int j = 0; j < kQueryCap; ++j) {
    if (j < queries) {
      load_floats<kPerLane>(rows.query + head_index(j) * kHeadDim + part * kPerLane, query[j]);
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) query[j][i] *= shape.scale * key_scale;  // FP8 keys read as e4m3 * scale
      query_end[j] = rows.context[first_row + j / group] - begin;
    }
  }

  // A warp takes kUnroll groups of kPositionsPerWarp positions at once, all their loads issued before the first
  // use: one position a lane group at a time leaves too few bytes in flight to draw on HBM's bandwidth.
  constexpr int kWarpStride = kPositionsPerWarp * kUnroll;
  float* scores = shared;
  for (int first = warp * kWarpStride; first < count; first += kWarps * kWarpStride) {  // uniform in the warp
    float key[kUnroll][kPerLane] = {};
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int index = first + u * kPositionsPerWarp + slot_in_warp;
      if (index < count) load_floats<kPerLane>(key_cache + element_offset(index), key[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int index = first + u * kPositionsPerWarp + slot_in_warp;
#pragma unroll
      for (int j = 0; j < kQueryCap; ++j) {
        if (j < queries) {  // uniform over the block: every lane takes the shuffles
          float dot = 0.0f;
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) dot += query[j][i] * key[u][i];
#pragma unroll
          for (int offset = kLanes / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(kFullWarp, dot, offset);
          if (index < count && part == 0) scores[j * kMaxSplitTokens + index] = index < query_end[j] ? dot : -INFINITY;
        }
      }
    }
  }
  __syncthreads();

  for (int j = 0; j < queries; ++j) {
    float* query_scores = scores + j * kMaxSplitTokens;
    float best = -INFINITY;
    for (int i = threadIdx.x; i < count; i += kThreads) best = fmaxf(best, query_scores[i]);
    best = block_max(best, scratch);
    float total = 0.0f;
    for (int i = threadIdx.x; i < count; i += kThreads) {
      // A query whose causal end falls before this split has no position in it: weight 0 throughout.
      const float weight = best == -INFINITY ? 0.0f : expf(query_scores[i] - best);
      query_scores[i] = weight;
      total += weight;
    }
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) query_max[j] = best, query_sum[j] = total;
  }
  __syncthreads();

  float accumulated[kQueryCap][kPerLane] = {};
  for (int first = warp * kWarpStride; first < count; first += kWarps * kWarpStride) {
    float value[kUnroll][kPerLane] = {};
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int index = first + u * kPositionsPerWarp + slot_in_warp;
      if (index < count) load_floats<kPerLane>(value_cache + element_offset(index), value[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int index = first + u * kPositionsPerWarp + slot_in_warp;
      if (index >= count) continue;
#pragma unroll
      for (int j = 0; j < kQueryCap; ++j) {
        if (j < queries) {
          const float weight = scores[j * kMaxSplitTokens + index];
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) accumulated[j][i] += weight * value[u][i];
        }
      }
    }
  }
  // Sum over the positions a warp held at once (lanes kLanes apart), then over the warps in shared memory.
#pragma unroll
  for (int j = 0; j < kQueryCap; ++j) {
    if (j < queries) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
#pragma unroll
        for (int offset = kLanes; offset < 32; offset *= 2) {
          accumulated[j][i] += __shfl_xor_sync(kFullWarp, accumulated[j][i], offset);
        }
      }
    }
  }
  __syncthreads();  // the scores are read: their memory takes the per-warp outputs
  float* warp_outputs = shared;
  if (slot_in_warp == 0) {
#pragma unroll
    for (int j = 0; j < kQueryCap; ++j) {
      if (j < queries) {
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
          warp_outputs[(warp * queries + j) * kHeadDim + part * kPerLane + i] = accumulated[j][i];
        }
      }
    }
  }
  __syncthreads();
  for (int index = threadIdx.x; index < queries * kHeadDim; index += kThreads) {
    const int j = index / kHeadDim, d = index % kHeadDim;
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += warp_outputs[(w * queries + j) * kHeadDim + d];
    total *= value_scale;  // FP8 values read as e4m3 * scale
    if (splits == 1) {
      // begin 0: every query has position 0
      out[head_index(j) * kHeadDim + d] = __float2bfloat16_rn(total / query_sum[j]);
    } else {
      const int64_t partial = partial_index(j);
      split_output.partial_out[(partial * splits + split) * kHeadDim + d] = total;
      if (d == 0) {
        split_output.partial_max[partial * splits + split] = query_max[j];
        split_output.partial_sum[partial * splits + split] = query_sum[j];
      }
    }
  }
}

// decode_attention_kernel's shared memory: per warp a ring of kStages stages, each holding every lane's slice
// (kPerLane elements) of the keys and values of kUnroll positions per lane group, filled by cp.async; then the
// split's block-table entries. After the walk the ring's memory takes the warps' outputs.
template <typename CacheT, int kHeadDim, int kQueryCap>
struct DecodeLayout {
  static constexpr int kLanes = lanes_per_position<kHeadDim>();
  static constexpr int kPerLane = kHeadDim / kLanes;
  static constexpr int kPositionsPerWarp = 32 / kLanes;
  static constexpr int kSliceBytes = kPerLane * static_cast<int>(sizeof(CacheT));
  static constexpr int kUnroll = kSliceBytes >= 32 ? 1 : 32 / kSliceBytes;  // ~32 bytes of keys a lane a stage
  static constexpr int kStageBytes = kUnroll * 2 * 32 * kSliceBytes;        // keys and values, every lane
  // Stages ahead of the one in use are in flight: 3 where the ring fits 32 KiB, at least 1.
  static constexpr int kStages = std::clamp(32 * 1024 / (kWarps * kStageBytes), 2, 4);
  static constexpr int kRingBytes = kWarps * kStages * kStageBytes;
  static constexpr int kOutputBytes = kWarps * kQueryCap * kHeadDim * static_cast<int>(sizeof(float));
  static constexpr int kTableOffset = (std::max(kRingBytes, kOutputBytes) + 15) / 16 * 16;
  static size_t shared_bytes(int block_size) {
    return kTableOffset + sizeof(int32_t) * static_cast<size_t>(kMaxSplitTokens / block_size + 2);
  }
};

// Tiles of one row: one pass, online softmax per warp (see the file's comment). Several-row tiles are left to
// paged_attention_kernel. Each lane copies its own slices (cp.async) and reads back only those, so a warp needs
// no barrier between its stages.
template <typename CacheT, int kHeadDim, int kQueryCap>
__global__ void __launch_bounds__(kThreads)
    decode_attention_kernel(AttentionRows rows, AttentionShape shape, const CacheT* key_cache,
                            const CacheT* value_cache, float key_scale, float value_scale, int splits,
                            SplitOutput split_output, bf16* out) {
  using Layout = DecodeLayout<CacheT, kHeadDim, kQueryCap>;
  constexpr int kLanes = Layout::kLanes, kPerLane = Layout::kPerLane, kUnroll = Layout::kUnroll;
  constexpr int kStages = Layout::kStages, kSliceBytes = Layout::kSliceBytes;
  constexpr int kWarpStride = Layout::kPositionsPerWarp * kUnroll;  // positions a warp takes a stage
  using Slice = Packed<CacheT, kPerLane>;
  extern __shared__ __align__(16) unsigned char decode_shared[];
  auto* split_blocks = reinterpret_cast<int32_t*>(decode_shared + Layout::kTableOffset);
  __shared__ float warp_max[kWarps][kQueryCap], warp_sum[kWarps][kQueryCap];

  const int tile = blockIdx.x;
  if (rows.tile_row_counts[tile] != 1) return;  // paged_attention_kernel's
  const int kv_head = blockIdx.y, split = blockIdx.z;
  const int heads = shape.heads.heads, kv_heads = shape.heads.kv_heads, group = heads / kv_heads;
  const int row = rows.tile_first_rows[tile];
  const int queries = min(group, kQueryCap);
  // Query j is head kv_head * group + j of the row; its partial results sit where paged_attention_kernel's
  // would (the tile's slots in [tiles * max_tile_rows, heads]).
  const int64_t first_head = int64_t{row} * heads + int64_t{kv_head} * group;
  const int64_t first_partial = int64_t{tile} * rows.max_tile_rows * heads + int64_t{kv_head} * group;
  const int split_tokens = *rows.split_tokens;
  const int begin = split * split_tokens;
  const int count = min(rows.context[row], begin + split_tokens) - begin;  // all in the row's causal context
  if (count <= 0) {  // only when splits > 1: an empty split, skipped by the combine
    for (int j = threadIdx.x; j < queries; j += kThreads) {
      split_output.partial_max[(first_partial + j) * splits + split] = -INFINITY;
      split_output.partial_sum[(first_partial + j) * splits + split] = 0.0f;
    }
    return;
  }
  const int block_size = shape.block_size;
  const int first_block = begin / block_size;
  const int32_t* block_table = rows.block_tables + rows.table_offsets[row];
  for (int i = threadIdx.x; i <= (begin + count - 1) / block_size - first_block; i += kThreads) {
    split_blocks[i] = block_table[first_block + i];
  }

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int part = lane % kLanes, slot_in_warp = lane / kLanes;
  float query[kQueryCap][kPerLane];
#pragma unroll
  for (int j = 0; j < kQueryCap; ++j) {
    if (j < queries) {
      load_floats<kPerLane>(rows.query + (first_head + j) * kHeadDim + part * kPerLane, query[j]);
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) query[j][i] *= shape.scale * key_scale;  // FP8 keys read as e4m3 * scale
    }
  }
  __syncthreads();  // split_blocks is written

  // Chunk c of this warp: positions warp_first + c * stride + u * kPositionsPerWarp + slot_in_warp, in stage
  // c % kStages of the warp's ring.
  const int warp_first = warp * kWarpStride, stride = kWarps * kWarpStride;
  const int chunks = warp_first < count ? (count - warp_first + stride - 1) / stride : 0;  // uniform in the warp
  unsigned char* ring = decode_shared + warp * kStages * Layout::kStageBytes;
  auto slice = [&](int chunk, int u, int is_value) {
    return ring + (((chunk % kStages) * kUnroll + u) * 2 + is_value) * 32 * kSliceBytes + lane * kSliceBytes;
  };
  auto issue = [&](int chunk) {  // one commit group per chunk, empty past the last, so that waits count alike
    if (chunk < chunks) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int index = warp_first + chunk * stride + u * Layout::kPositionsPerWarp + slot_in_warp;
        if (index < count) {
          const int position = begin + index;
          const int64_t slot =
              int64_t{split_blocks[position / block_size - first_block]} * block_size + position % block_size;
          const int64_t offset = (slot * kv_heads + kv_head) * kHeadDim + part * kPerLane;
          copy_async<kSliceBytes>(slice(chunk, u, 0), key_cache + offset);
          copy_async<kSliceBytes>(slice(chunk, u, 1), value_cache + offset);
        }
      }
    }
    copy_async_commit();
  };

  // Every lane of a warp holds the warp's running max (reduced over the warp at each chunk); a lane's sum and
  // output cover the positions its lane group read, and are summed over the lane groups at the end.
  float running_max[kQueryCap], running_sum[kQueryCap], accumulated[kQueryCap][kPerLane];
#pragma unroll
  for (int j = 0; j < kQueryCap; ++j) {
    running_max[j] = -INFINITY, running_sum[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) accumulated[j][i] = 0.0f;
  }
#pragma unroll
  for (int chunk = 0; chunk < kStages - 1; ++chunk) issue(chunk);
  for (int chunk = 0; chunk < chunks; ++chunk) {
    issue(chunk + kStages - 1);  // into the stage the previous chunk used: this lane has read it
    copy_async_wait<kStages - 1>();
    const int first = warp_first + chunk * stride;
#pragma unroll
    for (int j = 0; j < kQueryCap; ++j) {
      if (j < queries) {  // uniform over the block: every lane takes the shuffles
        float score[kUnroll];
        float step_max = -INFINITY;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const Slice key = *reinterpret_cast<const Slice*>(slice(chunk, u, 0));
          float dot = 0.0f;
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) dot += query[j][i] * to_float(key.values[i]);
#pragma unroll
          for (int offset = kLanes / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(kFullWarp, dot, offset);
          // Past the split's end the slice holds stale bytes: the score, not the dot, says so.
          score[u] = first + u * Layout::kPositionsPerWarp + slot_in_warp < count ? dot : -INFINITY;
          step_max = fmaxf(step_max, score[u]);
        }
#pragma unroll
        for (int offset = kLanes; offset < 32; offset *= 2) {
          step_max = fmaxf(step_max, __shfl_xor_sync(kFullWarp, step_max, offset));
        }
        // Finite: position `first` is in the split, and its lane group's score reached every lane.
        const float new_max = fmaxf(running_max[j], step_max);
        const float correction = expf(running_max[j] - new_max);  // 0 while the max was -inf
        running_sum[j] *= correction;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) accumulated[j][i] *= correction;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (score[u] == -INFINITY) continue;  // past the split's end: its value slice is stale too
          const float weight = expf(score[u] - new_max);
          const Slice value = *reinterpret_cast<const Slice*>(slice(chunk, u, 1));
          running_sum[j] += weight;
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) accumulated[j][i] += weight * to_float(value.values[i]);
        }
        running_max[j] = new_max;
      }
    }
  }
  copy_async_wait<0>();  // only empty groups are left; the ring's memory is about to take the outputs
  __syncthreads();
  auto* warp_out = reinterpret_cast<float*>(decode_shared);  // [kWarps][kQueryCap][kHeadDim]
  // Sum over the lane groups (lanes kLanes apart), which share the warp's max; then across warps below.
#pragma unroll
  for (int j = 0; j < kQueryCap; ++j) {
    if (j < queries) {
#pragma unroll
      for (int offset = kLanes; offset < 32; offset *= 2) {
        running_sum[j] += __shfl_xor_sync(kFullWarp, running_sum[j], offset);
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) accumulated[j][i] += __shfl_xor_sync(kFullWarp, accumulated[j][i], offset);
      }
      if (slot_in_warp == 0) {
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
          warp_out[(warp * kQueryCap + j) * kHeadDim + part * kPerLane + i] = accumulated[j][i];
        }
      }
      if (lane == 0) warp_max[warp][j] = running_max[j], warp_sum[warp][j] = running_sum[j];
    }
  }
  __syncthreads();
  // A warp that had no position (a short split) holds max -inf and sum 0: weight 0. Warp 0 always had one.
  for (int index = threadIdx.x; index < queries * kHeadDim; index += kThreads) {
    const int j = index / kHeadDim, d = index % kHeadDim;
    float best = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) best = fmaxf(best, warp_max[w][j]);
    float total = 0.0f, output = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float weight = expf(warp_max[w][j] - best);
      total += warp_sum[w][j] * weight;
      output += warp_out[(w * kQueryCap + j) * kHeadDim + d] * weight;
    }
    output *= value_scale;  // FP8 values read as e4m3 * scale
    if (splits == 1) {
      out[(first_head + j) * kHeadDim + d] = __float2bfloat16_rn(output / total);
    } else {
      const int64_t partial = first_partial + j;
      split_output.partial_out[(partial * splits + split) * kHeadDim + d] = output;
      if (d == 0) {
        split_output.partial_max[partial * splits + split] = best;
        split_output.partial_sum[partial * splits + split] = total;
      }
    }
  }
}

// The combine's split weights in shared memory, padded with zeros to a multiple of 8: its unrolled loop over them
// is compiled to 16-byte loads that may be issued ahead of the loop's bounds test (compute-sanitizer's memcheck on
// an H200: 2 splits, a 16-byte read of an 8-byte array). Padded, every such load stays inside the array and reads
// a weight of 0, which the loop skips.
__host__ __device__ constexpr int padded_splits(int splits) { return (splits + 7) / 8 * 8; }

// One block per (tile row slot, head): out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s over the splits that
// had positions (l_s > 0). The splits' weights e^(m_s - M) are found by the block together and kept in shared
// memory (dynamic: padded_splits(splits) floats), so a thread's walk over the splits is a run of independent loads
// rather than a chain of them. Slots past their tile's rows do nothing.
__global__ void combine_splits_kernel(AttentionRows rows, SplitOutput split_output, int heads, int head_dim, int splits,
                                      bf16* out) {
  extern __shared__ float split_weights[];  // [padded_splits(splits)]
  __shared__ float scratch[32];
  const int64_t slot = blockIdx.x;
  const int tile = static_cast<int>(slot / rows.max_tile_rows), in_tile = static_cast<int>(slot % rows.max_tile_rows);
  if (in_tile >= rows.tile_row_counts[tile]) return;
  const int64_t head = slot * heads + blockIdx.y;
  const int64_t out_head = int64_t{rows.tile_first_rows[tile] + in_tile} * heads + blockIdx.y;
  const float* maxima = split_output.partial_max + head * splits;
  const float* sums = split_output.partial_sum + head * splits;
  float best = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) {
    if (sums[s] > 0.0f) best = fmaxf(best, maxima[s]);
  }
  best = block_max(best, scratch);
  float total = 0.0f;
  for (int s = threadIdx.x; s < padded_splits(splits); s += blockDim.x) {
    // An empty split wrote no output: weight 0 marks it, and it is skipped below (its output is not even 0).
    float weight = 0.0f;
    if (s < splits && sums[s] > 0.0f) {
      weight = expf(maxima[s] - best);
      total += sums[s] * weight;
    }
    split_weights[s] = weight;
  }
  total = block_sum(total, scratch);  // its barriers also publish split_weights
  const float* partial_out = split_output.partial_out + head * splits * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float value = 0.0f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) {
      const float weight = split_weights[s];
      if (weight != 0.0f) value += partial_out[int64_t{s} * head_dim + d] * weight;
    }
    out[out_head * head_dim + d] = __float2bfloat16_rn(value / total);
  }
}

SplitOutput split_output_in(void* workspace, int64_t row_slots, int heads, int head_dim, int splits) {
  const int64_t partials = row_slots * heads * splits;
  auto* floats = static_cast<float*>(workspace);
  return {floats, floats + partials * head_dim, floats + partials * head_dim + partials};
}

template <typename CacheT, int kHeadDim, int kQueryCap>
Status launch(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, int splits,
              bool one_row_tiles, const SplitOutput& split_output, bf16* out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(rows.tiles), static_cast<unsigned>(shape.heads.kv_heads),
                  static_cast<unsigned>(splits));
  const auto* key = static_cast<const CacheT*>(cache.key);
  const auto* value = static_cast<const CacheT*>(cache.value);
  if (one_row_tiles) {
    using Layout = DecodeLayout<CacheT, kHeadDim, kQueryCap>;
    const size_t shared_bytes = Layout::shared_bytes(shape.block_size);
    static_assert(
        Layout::kTableOffset + sizeof(int32_t) * (kMaxSplitTokens + 2) + sizeof(float) * 2 * kWarps * kQueryCap <=
            48 * 1024,
        "shared memory past the default");
    decode_attention_kernel<CacheT, kHeadDim, kQueryCap><<<grid, kThreads, shared_bytes, stream>>>(
        rows, shape, key, value, cache.key_scale, cache.value_scale, splits, split_output, out);
    return launch_status("decode_attention");
  }
  const size_t shared_bytes =
      sizeof(float) * static_cast<size_t>(std::max(kQueryCap * kMaxSplitTokens, kWarps * kQueryCap * kHeadDim));
  static_assert(kMaxTileQueries * kMaxSplitTokens * sizeof(float) <= 48 * 1024, "shared memory past the default");
  paged_attention_kernel<CacheT, kHeadDim, kQueryCap><<<grid, kThreads, shared_bytes, stream>>>(
      rows, shape, key, value, cache.key_scale, cache.value_scale, splits, split_output, out);
  return launch_status("paged_attention");
}

// The kernel whose registers hold `queries` queries: 2, 4 or 8.
template <typename CacheT, int kHeadDim>
Status launch_for_queries(int queries, const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache,
                          int splits, bool one_row_tiles, const SplitOutput& split_output, bf16* out,
                          cudaStream_t stream) {
  if (queries <= 2)
    return launch<CacheT, kHeadDim, 2>(rows, shape, cache, splits, one_row_tiles, split_output, out, stream);
  if (queries <= 4)
    return launch<CacheT, kHeadDim, 4>(rows, shape, cache, splits, one_row_tiles, split_output, out, stream);
  return launch<CacheT, kHeadDim, kMaxTileQueries>(rows, shape, cache, splits, one_row_tiles, split_output, out,
                                                   stream);
}

template <typename CacheT, int kHeadDim>
Status launch_for_tiles(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, int splits,
                        void* workspace, bf16* out, cudaStream_t stream) {
  const int group = shape.heads.heads / shape.heads.kv_heads;
  const SplitOutput split_output =
      splits > 1 ? split_output_in(workspace, rows.tiles * rows.max_tile_rows, shape.heads.heads, kHeadDim, splits)
                 : SplitOutput{};
  // One-row tiles in one launch, several-row tiles (a step's prompt tiles) in another: each kernel skips the
  // other's tiles.
  RECGPT_RETURN_IF_ERROR(
      (launch_for_queries<CacheT, kHeadDim>(group, rows, shape, cache, splits, true, split_output, out, stream)));
  if (rows.max_tile_rows > 1) {
    RECGPT_RETURN_IF_ERROR((launch_for_queries<CacheT, kHeadDim>(rows.max_tile_rows * group, rows, shape, cache, splits,
                                                                 false, split_output, out, stream)));
  }
  if (splits == 1) return Status::ok();
  const dim3 combine_grid(static_cast<unsigned>(rows.tiles * rows.max_tile_rows),
                          static_cast<unsigned>(shape.heads.heads));
  combine_splits_kernel<<<combine_grid, std::min(kHeadDim, 256), sizeof(float) * padded_splits(splits), stream>>>(
      rows, split_output, shape.heads.heads, kHeadDim, splits, out);
  return launch_status("combine_splits");
}

template <typename CacheT>
Status launch_for_head_dim(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, int splits,
                           void* workspace, bf16* out, cudaStream_t stream) {
  switch (shape.heads.head_dim) {
    case 16: return launch_for_tiles<CacheT, 16>(rows, shape, cache, splits, workspace, out, stream);
    case 32: return launch_for_tiles<CacheT, 32>(rows, shape, cache, splits, workspace, out, stream);
    case 48: return launch_for_tiles<CacheT, 48>(rows, shape, cache, splits, workspace, out, stream);
    case 64: return launch_for_tiles<CacheT, 64>(rows, shape, cache, splits, workspace, out, stream);
    case 128: return launch_for_tiles<CacheT, 128>(rows, shape, cache, splits, workspace, out, stream);
    case 256: return launch_for_tiles<CacheT, 256>(rows, shape, cache, splits, workspace, out, stream);
  }
  return unimplemented("CUDA attention has no kernel for head_dim " + std::to_string(shape.heads.head_dim));
}

}  // namespace

bool attention_supports(const HeadShape& shape) {
  const bool known_size = shape.head_dim == 16 || shape.head_dim == 32 || shape.head_dim == 48 ||
                          shape.head_dim == 64 || shape.head_dim == 128 || shape.head_dim == 256;
  return known_size && shape.kv_heads > 0 && shape.heads % shape.kv_heads == 0 &&
         shape.heads / shape.kv_heads <= kMaxTileQueries;
}

AttentionSplits attention_splits(int64_t tiles, int kv_heads, int max_context, int multiprocessors) {
  constexpr int kMinSplitTokens = 64;
  if (max_context <= 0) return {1, kMaxSplitTokens};              // no row: nothing to split
  const int64_t blocks = std::max<int64_t>(1, tiles * kv_heads);  // per split
  const int64_t resident = int64_t{kBlocksPerMultiprocessor} * std::max(1, multiprocessors);  // run at once
  const int64_t at_most = std::max(1, max_context / kMinSplitTokens);
  const int64_t at_least = (max_context + kMaxSplitTokens - 1) / kMaxSplitTokens;
  // As many splits as fill the fewest rounds of resident blocks that at_least needs: a last round left mostly
  // idle costs as long as a full one (8 sequences of 16K tokens: 24 splits in 2 full rounds, not 16 in 1.3).
  const int64_t rounds = (blocks * at_least + resident - 1) / resident;
  const int64_t splits = std::max<int64_t>({1, at_least, std::min(rounds * resident / blocks, at_most)});
  const auto split_tokens = static_cast<int>((max_context + splits - 1) / splits);
  // Rounding the split up can leave the last splits empty: count only those that hold positions.
  return {(max_context + split_tokens - 1) / split_tokens, split_tokens};
}

size_t attention_workspace_bytes(int64_t row_slots, int heads, int head_dim, int splits) {
  if (splits <= 1) return 0;
  const size_t partials = static_cast<size_t>(row_slots) * heads * splits;
  return sizeof(float) * partials * (head_dim + 2);
}

Status paged_attention(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, int splits,
                       void* workspace, bf16* out, cudaStream_t stream) {
  if (!attention_supports(shape.heads)) {
    return unimplemented("CUDA attention supports head_dim 16, 32, 48, 64, 128 or 256 and up to " +
                         std::to_string(kMaxTileQueries) + " query heads per KV head");
  }
  if (rows.rows == 0) return Status::ok();
  const int group = shape.heads.heads / shape.heads.kv_heads;
  if (rows.tiles < 1 || rows.max_tile_rows < 1 || rows.max_tile_rows * group > kMaxTileQueries) {
    return invalid_argument("attention over " + std::to_string(rows.tiles) + " tiles of up to " +
                            std::to_string(rows.max_tile_rows) + " rows: need at least one tile, of 1 to " +
                            std::to_string(kMaxTileQueries / group) + " rows");
  }
  switch (cache.type) {
    case CacheType::kF32: return launch_for_head_dim<float>(rows, shape, cache, splits, workspace, out, stream);
    case CacheType::kBF16: return launch_for_head_dim<bf16>(rows, shape, cache, splits, workspace, out, stream);
    case CacheType::kFP8E4M3:
      return launch_for_head_dim<__nv_fp8_e4m3>(rows, shape, cache, splits, workspace, out, stream);
  }
  return invalid_argument("unknown KV cache type");
}

}  // namespace recgpt::cuda
