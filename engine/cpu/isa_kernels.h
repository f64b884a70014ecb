// Internal to engine/cpu: the kernels compiled once per instruction set, behind one table.
//
// isa_kernels_avx512.cpp and isa_kernels_avx2.cpp compile isa_kernels_impl.inc (and attention_kernels.inc) with
// their own Simd type and target pragma; matmul_bf16_dot.cpp holds the AVX512_BF16 matmul kernel (the dot-form
// kernels share matmul_strip_impl.inc) and matmul_amx.cpp the AMX one. The public entry points (matmul.cpp, ops.cpp,
// attention.cpp) pick kernels by cpu_features() and do the threading; every kernel here runs on the calling thread
// only.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/cpu/attention.h"
#include "engine/cpu/matmul.h"

namespace recgpt {

// A strip of a matmul: y[i, j] = Σ_k x[i, k] · w[j, k] for i < rows, j < cols, over weight rows that lie one
// after another. A kernel takes the strip tile_cols weight rows at a time, each tile in one pass over k, with no
// software prefetch: one call per strip keeps the loads a steady sweep through memory that the hardware
// prefetchers follow. With the peel below, measured on Zen 5 against one call per tile with the next tile's rows
// prefetched into L1, over Qwen3-0.6B's decode matmuls at the model file's own tensor offsets: bf16 weights
// 1.06x faster at m = 1, 1.15x at m = 8, alike at m = 2 and with f32 weights.
struct MatmulStrip {
  const void* x;  // [rows, k] with row stride x_stride elements; f32, or bf16 for the bf16-dot kernel
  int64_t x_stride;
  int rows;       // 1..tile_rows
  const void* w;  // [cols, k], row stride k; or its tiles, for run_tiled
  int64_t cols;   // >= 1
  int64_t k;
  float* y;  // [rows, cols] with row stride y_stride
  int64_t y_stride;
};

// Elements at the start of every weight row of a strip before the row's first `load_bytes` boundary (the
// kernel's weight load width, at most a cache line), when all rows share it; else 0. Kernels take these first,
// in a partial step, so that every later weight load is aligned: a tensor in a safetensors file starts wherever
// the header ends (Hugging Face pads it to 8 bytes), and a load that straddles two cache lines costs both
// (measured on Zen 5 over Qwen3-0.6B's decode matmuls 40 bytes off alignment: bf16 weights 1.06-1.11x, f32
// 1.04-1.08x faster peeled).
inline int64_t strip_peel(const void* w, int64_t k, int64_t element_bytes, int64_t load_bytes) {
  const auto misalignment = static_cast<int64_t>(reinterpret_cast<uintptr_t>(w) % load_bytes);
  if ((k * element_bytes) % load_bytes != 0 || misalignment == 0 || misalignment % element_bytes != 0) return 0;
  return std::min(k, (load_bytes - misalignment) / element_bytes);
}

struct MatmulKernel {
  int tile_rows;  // most rows of x per strip
  int tile_cols;  // weight rows per register tile
  void (*run)(const MatmulStrip& strip);
  // Weights in WeightLayout::kTiled (cols a multiple of tile_cols); null where the kernel has no such form.
  void (*run_tiled)(const MatmulStrip& strip) = nullptr;
};

// One work item of paged_attention: queries [query_begin, query_end) of one sequence, all query heads that read
// kv heads [kv_head_begin, kv_head_end). Queries x heads x group size must not exceed kMaxAttentionRows.
struct AttentionWorkItem {
  const KvLayerView* kv;
  const AttentionSequence* sequence;
  int num_heads;
  int kv_head_begin;
  int kv_head_end;
  int32_t query_begin;
  int32_t query_end;
  float scale;
  // The item the same thread runs next, if known: a hint only (the decode path requests its first chunk during
  // this item's last one).
  const AttentionWorkItem* next = nullptr;
  // Runs on attend_bf16_dot (uses_bf16_decode_attention said so of its sequence).
  bool bf16_decode = false;
};
inline constexpr int kMaxAttentionRows = 64;
inline constexpr int kMaxAttentionHeadDim = 256;  // head_dim must also be a multiple of 16

// The pool slot of `sequence`'s position.
inline int64_t slot_of(const KvLayerView& kv, const AttentionSequence& sequence, int32_t position) {
  return int64_t{sequence.block_table[position / kv.block_size]} * kv.block_size + position % kv.block_size;
}

// Query row r of a work item: kv head kv_head_begin + r / rows_per_head, then query-major within the head, so that
// positions ascend within each head's rows.
struct RowIndex {
  int32_t query;
  int head;
};
inline RowIndex row_index(const AttentionWorkItem& item, int group, int rows_per_head, int r) {
  int within = r % rows_per_head;
  return {item.query_begin + within / group, (item.kv_head_begin + r / rows_per_head) * group + within % group};
}

struct IsaKernels {
  const char* name;
  MatmulKernel matmul_f32_weights;   // x f32, W f32, FMA
  MatmulKernel matmul_bf16_weights;  // x f32, W bf16 widened to f32, FMA
  void (*rms_norm)(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);
  void (*silu_mul)(const float* gate, const float* up, int64_t n, float* out);
  void (*add)(float* x, const float* y, int64_t n);
  void (*f32_to_bf16)(const float* in, int64_t n, uint16_t* out);
  void (*bf16_to_f32)(const uint16_t* in, int64_t n, float* out);
  float (*max_value)(const float* x, int64_t n);
  float (*exp_shifted)(const float* x, int64_t n, float shift, float* out);
  float (*mass_at_least)(const float* x, int64_t n, float threshold);
  int64_t (*indices_at_least)(const float* x, int64_t n, float threshold, int32_t* out);
  void (*attend)(const AttentionWorkItem& item);
};

const IsaKernels& avx512_kernels();  // needs cpu_features().avx512
const IsaKernels& avx2_kernels();    // needs cpu_features().avx2_fma
// The best table cpu_features() allows; aborts on a CPU without AVX2 + FMA.
const IsaKernels& isa_kernels();

// x bf16, W bf16, VDPBF16PS; needs cpu_features().avx512_bf16.
MatmulKernel bf16_dot_matmul_kernel();

// The decode attention kernel for bf16 pools (attention_bf16_dot.cpp; needs cpu_features().avx512_bf16): items of
// at most kBf16DecodeItemRows query rows, at most kBf16DecodeRowsPerHead per kv head, head_dim a multiple of 32. It
// rounds queries and softmax weights to bf16 (attention.h, uses_bf16_decode_attention).
inline constexpr int kBf16DecodeItemRows = 16;
inline constexpr int kBf16DecodeRowsPerHead = 4;
void attend_bf16_dot(const AttentionWorkItem& item);

// AMX (matmul_amx.cpp; needs cpu_features().amx_bf16, k % 32 == 0). x, already bf16, is packed per tile of 16
// rows (rows past m are zero) into [ceil(m / 16), k / 32, 16 pairs, 16 rows, 2] for the B operand.
void amx_pack_x(const uint16_t* x /* [m, k] */, int64_t m, int64_t k, int64_t tile_begin, int64_t tile_end,
                uint16_t* packed /* [ceil(m / 16) * 16, k] */);
// y[:, column_begin..column_end) = x · W[column_begin..column_end)ᵀ, columns in multiples of 32. Loads and
// releases the calling thread's tile configuration.
void amx_matmul_columns(const uint16_t* packed_x, int64_t m, const uint16_t* w /* [n, k] */, int64_t k,
                        int64_t column_begin, int64_t column_end, float* y /* [m, n] */, int64_t n);

// The panel matmuls (matmul_panel_impl.inc) pack x per panel of panel_rows(m) rows (rows past m are zero): wide
// panels of kPanelRows rows, or for m <= kNarrowPanelRows one narrow panel, which computes half the padding rows
// of a wide one (measured on Zen 5, 2 threads, Qwen3-0.6B's decode matmuls, tiled weights: see matmul.h).
inline constexpr int kPanelRows = 32;
inline constexpr int kNarrowPanelRows = 16;
constexpr int64_t panel_rows(int64_t m) { return m <= kNarrowPanelRows ? kNarrowPanelRows : kPanelRows; }

// The f32 panel matmul (matmul_f32_panel.cpp; needs cpu_features().avx512). x is packed into [ceil(m / P), k, P]
// for P = panel_rows(m); one call packs the k range [k_begin, k_end) of every panel.
// Weight rows per register tile. Each is its own stream from memory: 8 streams measured 1.1-1.2x faster than
// 12 at m = 32 on Zen 5 with weights from DRAM (the same within 1% with weights in L2).
inline constexpr int kF32PanelTileColumns = 8;
void f32_pack_panels(const float* x /* [m, k] */, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, float* packed);
// y[:, column_begin..column_end) = x · W[column_begin..column_end)ᵀ, W f32 [n, k] in `layout` (tiled: column_begin
// a multiple of kWeightTileRows).
void f32_panel_matmul_columns(const float* packed_x, int64_t m, const float* w, WeightLayout layout, int64_t k,
                              int64_t column_begin, int64_t column_end, float* y /* [m, n] */, int64_t n);

// The bf16 panel matmul (matmul_bf16_panel.cpp; needs cpu_features().avx512_bf16, k even). x (f32) is rounded
// to bf16 and packed per panel as pairs of k: [ceil(m / P), k / 2, P, 2] for P = panel_rows(m); one call packs the
// k range [k_begin, k_end) (both even) of every panel.
inline constexpr int kBf16PanelTileColumns = 8;  // weight rows per register tile
void bf16_pack_panels(const float* x /* [m, k] */, int64_t m, int64_t k, int64_t k_begin, int64_t k_end,
                      uint16_t* packed);
// y[:, column_begin..column_end) = x · W[column_begin..column_end)ᵀ, W bf16 [n, k] in `layout` (tiled: column_begin
// a multiple of kWeightTileRows).
void bf16_panel_matmul_columns(const uint16_t* packed_x, int64_t m, const uint16_t* w, WeightLayout layout, int64_t k,
                               int64_t column_begin, int64_t column_end, float* y /* [m, n] */, int64_t n);

}  // namespace recgpt
