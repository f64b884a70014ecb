// Attention over a paged KV cache: grouped-query, causal, numerically stable (online softmax in f32).
#pragma once

#include <cstdint>
#include <span>

#include "engine/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace recgpt {

// One layer's K and V pools. Token slot s = block * block_size + offset holds, for each kv head, head_dim values
// at key + (s * num_kv_heads + kv_head) * head_dim (same for value).
struct KvLayerView {
  void* key;    // [num_blocks, block_size, num_kv_heads, head_dim]
  void* value;  // [num_blocks, block_size, num_kv_heads, head_dim]
  DType dtype;  // kF32 or kBF16
  int32_t block_size;
  int32_t num_kv_heads;
  int32_t head_dim;
};

// Writes token i's k and v rows into slot slots[i] (bf16 pools: rounded to nearest even), tokens spread over the
// pool.
void store_kv(ThreadPool& pool, const KvLayerView& kv, const int64_t* slots /* [num_tokens] */,
              const float* k /* [num_tokens, num_kv_heads, head_dim] */,
              const float* v /* [num_tokens, num_kv_heads, head_dim] */, int64_t num_tokens);

// The queries of one sequence in a batch: a prefill chunk (num_queries > 1) or a decode step (num_queries = 1).
struct AttentionSequence {
  const float* queries;  // [num_queries, num_heads, head_dim]
  float* output;         // [num_queries, num_heads, head_dim]
  int32_t num_queries;
  // Position of queries[0]; query i attends to keys at positions 0..first_position + i, which must already be
  // stored (store_kv) at the slots the block table gives.
  int32_t first_position;
  // Position p lives in block block_table[p / block_size], offset p % block_size.
  std::span<const int32_t> block_table;
};

// output = softmax(scale · q·Kᵀ, causal) · V for every sequence, query head h reading kv head
// h / (num_heads / num_kv_heads). Work items are (sequence, kv head, block of queries), spread over the pool;
// the query heads of one kv head are processed together so each K and V row is loaded once per item. In f32,
// except for the sequences uses_bf16_decode_attention names.
void paged_attention(ThreadPool& pool, const KvLayerView& kv, std::span<const AttentionSequence> sequences,
                     int num_heads, float scale);

// Whether paged_attention computes `sequence` with VDPBF16PS: a bf16 pool on a CPU with AVX512_BF16 (as
// cpu_features() says at the call), head_dim a multiple of 32, and a decode step (num_queries x query heads per
// kv head <= 4). Such a sequence's queries are rounded to bf16 before q·K, and its softmax weights before the sum
// over V (as GPU attention kernels do; the normalising sum stays unrounded), so each output element lies within
// 2^-9 · max |v| (the weights' rounding) plus f32 error of softmax(scale · bf16(q)·Kᵀ) · V. Why: VDPBF16PS on K
// and V as stored took batch-32 decode of Qwen3-0.6B at 1K-token contexts 1.2-1.5x faster on Zen 5
// (docs/benchmarks.md, 2026-12-04).
bool uses_bf16_decode_attention(const KvLayerView& kv, const AttentionSequence& sequence, int num_heads);

}  // namespace recgpt
