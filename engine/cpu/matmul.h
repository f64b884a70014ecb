// y = x · Wᵀ for a linear layer, over weights in place (memory-mapped, Hugging Face layout) or repacked at load.
#pragma once

#include <cstdint>
#include <span>

#include "engine/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace recgpt {

// Rows of a tile of WeightLayout::kTiled (a register tile of the kernels), and bytes of one row in one chunk
// (one 64-byte load).
inline constexpr int64_t kWeightTileRows = 8;
inline constexpr int64_t kWeightTileChunkBytes = 64;

enum class WeightLayout {
  kRowMajor,  // [rows, cols]: Hugging Face Linear layout, used in place where the file is mapped
  // Packed at load (tiled_weights.h): tile t holds rows [8t, 8t + 8) in chunks of 64 bytes of each row, the 8
  // rows' chunks one after another (bf16: 32 elements per chunk; f32: 16). A kernel reads a tile as one
  // sequential stream instead of 8 streams a row apart (measured on Zen 5 over Qwen3-0.6B's decode matmuls at m
  // = 1, bf16: 1.05x, o_proj 1.17x).
  kTiled,
};

// A weight matrix [out features, in features]. The memory must stay valid and unchanged while matmul runs.
struct WeightMatrix {
  DType dtype;       // kF32 or kBF16
  const void* data;  // [rows, cols] in `layout`
  int64_t rows;      // n: output features
  int64_t cols;      // k: input features
  WeightLayout layout = WeightLayout::kRowMajor;
};

// Whether matmul() takes weights of this dtype and shape in WeightLayout::kTiled on this CPU: rows a multiple
// of kWeightTileRows and rows of whole chunks; bf16 on CPUs with AVX512_BF16 and without AMX (whose kernel reads
// its own tile layout), f32 on CPUs with AVX-512 (tiled f32 weights take the panel kernel at any m, not OpenBLAS).
bool tiled_layout_supported(DType dtype, int64_t rows, int64_t cols);

// y[m, n] = x[m, k] · W[n, k]ᵀ with f32 accumulation. x and y must not overlap. Tiled weights take the dot form
// below the panel kernel's rows and the panel kernel from there on (f32: at any m from kF32PanelMinRows).
//   kF32:  on AVX-512, kF32PanelMinRows <= m <= kF32PanelMaxRows through the panel kernel (outer products over
//          the pool); otherwise m >= kBlasMinRows through OpenBLAS sgemm (its own threads, repacking W per call)
//          and smaller m through the dot-form kernel, streaming W at memory bandwidth over the pool.
//   kBF16: parallel over n: AMX tiles (m >= kAmxMinRows, k and n multiples of 32, CPUs with AMX-BF16), else
//          with AVX512_BF16 the VDPBF16PS panel kernel (m >= kBf16PanelMinRows, k even) or dot form over k,
//          all on x rounded to bf16 once per call; without AVX512_BF16, W widened to f32 and multiplied with
//          the f32 x by FMA (AVX-512F or AVX2).
// Besides y, the only memory used is per-thread scratch of x rounded to bf16 and/or packed (up to (2·m + 31)·k
// bf16, or (m + 31)·k f32 for m <= 64): the calling thread's, and for m <= 32 on the panel paths each pool
// thread's own copy.
// Call from outside parallel_for (it uses the pool and OpenBLAS threads).
void matmul(ThreadPool& pool, const float* x /* [m, k] */, int64_t m, const WeightMatrix& w, float* y /* [m, n] */);

// One weight matrix and its output, for several multiplied with the same x.
struct MatmulTarget {
  WeightMatrix w;
  float* y;  // [m, w.rows]
};

// y_t = x · W_tᵀ for every target, as matmul() does each, with x prepared (rounded, packed) once and all
// targets' column blocks spread over the pool in one dispatch (e.g. q, k and v projections). The targets must
// share dtype and k; x must not overlap any y.
void matmul_shared_input(ThreadPool& pool, const float* x, int64_t m, std::span<const MatmulTarget> targets);

// Below this many rows, f32 weights go through our streaming kernel rather than OpenBLAS.
inline constexpr int64_t kBlasMinRows = 16;
// Between these, f32 weights go through the AVX-512 panel kernel (outer products) where the CPU has AVX-512.
// Below, the dot form, one pass over W per 3 rows (measured on Zen 5, 2 threads, Qwen3-0.6B decode steps, tiled
// weights: dot 1.1x faster at m = 4-5, 1.05x at 6; panel 1.05-1.1x at 7-8).
inline constexpr int64_t kF32PanelMinRows = 7;
inline constexpr int64_t kF32PanelMaxRows = 64;
// From this many rows on, bf16 weights go through AMX where the CPU has it.
inline constexpr int64_t kAmxMinRows = 4;
// From this many rows on, bf16 weights go through the panel kernel on CPUs with AVX512_BF16 but no AMX (decode
// batches and prefill alike). Below, the dot form, which takes 3 rows per pass over W, while the panel computes
// 16 rows up to 16 (measured on Zen 5, 2 threads, Qwen3-0.6B decode steps, tiled weights: dot 1.1-1.2x faster
// at m = 8, alike at 9-12, panel 1.15x at 13, 1.15-1.25x at 16).
inline constexpr int64_t kBf16PanelMinRows = 13;

}  // namespace recgpt
