// The CUDA backend's kernels, each behind a host launcher that enqueues it on `stream` and returns the launch
// error as a Status (kInternal naming the kernel). Tensors are row-major device arrays; the shape of each is
// written beside its pointer. Activations between stages are f32 (the residual stream, projections) or bf16
// (what a GEMM reads); the paged KV cache is f32 or bf16.
//
// Includes the CUDA runtime headers: include it only from cuda_kernels/ and the CUDA tests, never from a header
// a CPU build sees.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace recgpt::cuda {

using bf16 = __nv_bfloat16;

// Element type of the paged KV cache (the engine's DType::kF32, kBF16 and kFP8E4M3).
enum class CacheType { kF32, kBF16, kFP8E4M3 };

// One layer of the paged KV cache: K and V arrays [num_blocks * block_size, kv_heads, head_dim] of `type`. FP8
// elements hold e4m3(x / scale), saturated to the finite range, and read back as e4m3 * scale; the scales are 1
// for the other types.
struct PagedCache {
  void* key = nullptr;
  void* value = nullptr;
  CacheType type = CacheType::kBF16;
  float key_scale = 1.0f;
  float value_scale = 1.0f;
};

// Hugging Face ACT2FN names: "gelu" (erf), "gelu_pytorch_tanh", "silu", "relu".
enum class Activation { kGelu, kGeluTanh, kSilu, kRelu };

// Input embeddings. out [rows, hidden] f32: row r is table[tokens[r]] for a vocabulary token (entity_rows[r] < 0),
// or adaptor[entity_rows[r]] + adaptor_bias for an entity token. table [vocab, hidden] bf16; adaptor
// [entities, hidden] f32 and adaptor_bias [hidden] f32 may be null when no row names an entity.
Status embed_tokens(const int32_t* tokens /* [rows] */, const int32_t* entity_rows /* [rows] */, int64_t rows,
                    const bf16* table, const float* adaptor, const float* adaptor_bias, int hidden, float* out,
                    cudaStream_t stream);

// x [rows, width] f32, in place: x = activation(x + bias), bias [width] f32.
Status bias_activation(float* x, const float* bias, int64_t rows, int width, Activation activation,
                       cudaStream_t stream);

// RMSNorm: out[r] = bf16(x[s] / sqrt(mean(x[s]^2) + eps) * weight) with s = source_rows[r], or r when
// source_rows is null. x [*, width] f32, weight [width] f32, out [rows, width] bf16.
Status rms_norm(const float* x, const int32_t* source_rows /* [rows] or null */, int64_t rows, int width,
                const float* weight, float eps, bf16* out, cudaStream_t stream);

// The attention inputs of one layer, fused: per token, each query and key head of the fused projection's output
// is RMS-normed over head_dim (q_norm, k_norm [head_dim] f32) and rotated by rotate-half RoPE at
// positions[t] (inv_freq [head_dim / 2] f32, angle = position * inv_freq in f32 as Hugging Face computes it).
// Queries go to `query`; keys and values into the paged cache at slots[t] = block * block_size + offset.
struct HeadShape {
  int heads = 0;     // query heads
  int kv_heads = 0;  // key/value heads; heads % kv_heads == 0
  int head_dim = 0;  // even
};
Status qk_norm_rope_store(const float* qkv /* [tokens, (heads + 2 kv_heads) * head_dim]: q, k, v heads */,
                          int64_t tokens, HeadShape shape, const float* q_norm, const float* k_norm, float eps,
                          const int32_t* positions /* [tokens] */, const float* inv_freq,
                          const int64_t* slots /* [tokens] */, float* query /* [tokens, heads * head_dim] */,
                          const PagedCache& cache, cudaStream_t stream);

// SwiGLU: out [rows, width] bf16 = silu(gate) * up, gate_up [rows, 2 * width] f32 with the gate first.
Status silu_mul(const float* gate_up, int64_t rows, int width, bf16* out, cudaStream_t stream);

// Paged attention over GQA for any mix of prompt rows and decode rows. Each query row attends causally to the
// first context[r] tokens of its sequence (its position + 1), whose KV blocks are listed from
// block_tables[table_offsets[r]]. Rows are served in tiles: consecutive rows of one sequence (positions one
// apart), at most kMaxTileQueries / (query heads per KV head) of them, sharing every key and value read. Long
// contexts are split over `splits` thread blocks per (tile, KV head) (flash-decoding), each taking
// `split_tokens` positions, and combined after.
constexpr int kMaxTileQueries = 8;  // tile rows x query heads per KV head
struct AttentionRows {
  const float* query = nullptr;              // [rows, heads, head_dim], RoPE applied
  const int32_t* context = nullptr;          // [rows]
  const int32_t* table_offsets = nullptr;    // [rows]
  const int32_t* block_tables = nullptr;     // the sequences' block tables, one after another
  const int32_t* tile_first_rows = nullptr;  // [tiles]
  const int32_t* tile_row_counts = nullptr;  // [tiles]
  const int32_t* split_tokens = nullptr;     // [1]: positions per split, in device memory so a graph can replay
  int64_t rows = 0;
  int64_t tiles = 0;      // at least 1 when rows > 0
  int max_tile_rows = 0;  // over the tiles, at least 1: sizes the kernel's registers (the kernel clamps to it)
};

// Rows a prompt's tile takes for a model with `group` query heads per KV head.
inline int rows_per_tile(int group) { return group >= kMaxTileQueries ? 1 : kMaxTileQueries / group; }
struct AttentionShape {
  HeadShape heads;
  int block_size = 0;
  float scale = 0;  // 1 / sqrt(head_dim)
};

// Head sizes the attention kernel is built for.
bool attention_supports(const HeadShape& shape);

// Splits for a step of `tiles` row tiles: as many thread blocks as fill whole rounds of kBlocksPerMultiprocessor on
// each of `multiprocessors` (the decode kernel's blocks that fit at once: its loads in flight are what draw on
// HBM's bandwidth), the fewest rounds the longest context allows, none shorter than 64 positions, none longer than
// kMaxSplitTokens; and the positions each split takes.
struct AttentionSplits {
  int splits = 1;
  int split_tokens = 0;
};
constexpr int kMaxSplitTokens = 1024;
constexpr int kBlocksPerMultiprocessor = 6;  // bf16, head_dim 128: shared memory (33 KiB a block) allows 6
AttentionSplits attention_splits(int64_t tiles, int kv_heads, int max_context, int multiprocessors);

// Bytes of the partial results `workspace` holds when splits > 1 (0 otherwise), for `row_slots` = tiles x
// max_tile_rows of the AttentionRows.
size_t attention_workspace_bytes(int64_t row_slots, int heads, int head_dim, int splits);

Status paged_attention(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache, int splits,
                       void* workspace, bf16* out /* [rows, heads * head_dim] */, cudaStream_t stream);

// Tensor-core attention for prompt chunks (FlashAttention-2 style; bf16 operands, f32 accumulation and softmax):
// the same contract as paged_attention for the rows of `rows`' tiles, each tile up to kPromptTileRows consecutive
// rows of one sequence (max_tile_rows: the longest); one thread block per (tile, query head), no splits
// (split_tokens unused). Keys and values enter the products as bf16, queries too (scaled): a bf16 model's error.
constexpr int kPromptTileRows = 64;
bool prompt_attention_supports(const HeadShape& shape);  // head_dim 32, 64 or 128
Status prompt_attention(const AttentionRows& rows, const AttentionShape& shape, const PagedCache& cache,
                        bf16* out /* [rows, heads * head_dim] */, cudaStream_t stream);

}  // namespace recgpt::cuda
