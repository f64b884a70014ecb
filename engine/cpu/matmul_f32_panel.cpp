// The f32 panel matmul for a few to a few dozen rows of x (batched decode): yᵀ = W · xᵀ as an outer product.
// x is packed once per call into panels of 32 rows laid out [k][32]; each weight element is broadcast once
// from W in place (no repacking) against the two 16-row vectors of the panel, so every load feeds two FMAs
// and the weights stream through once per panel. Compare the dot form (isa_kernels_impl.inc), which needs a
// weight vector per x row and a horizontal reduction per output.
#include <algorithm>
#include <cstdint>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx512.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")

namespace recgpt::avx512_panel {
namespace {

using avx512::Simd;
using F = Simd::F;

constexpr int kNextTileLines = 4;          // cache lines of each next-tile row prefetched at the end of a tile
constexpr int kPanelRows = kF32PanelRows;  // x rows per panel: two vectors
constexpr int kTileWeightRows = kF32PanelTileColumns;  // 12 x 2 accumulators + 2 x vectors of 32 registers

// y[panel rows][kTileWeightRows columns] = panel · w_rows[...]ᵀ over all k. `next_tile`: the rows after
// these in W are the next call's.
void tile(const float* panel /* [k, 32] */, const float* const* w_rows, int64_t k, float* y, int64_t y_stride,
          int valid_rows, int valid_columns, bool next_tile) {
  F acc[kTileWeightRows][2];
#pragma GCC unroll 12
  for (int r = 0; r < kTileWeightRows; ++r) acc[r][0] = acc[r][1] = Simd::zero();
  const float* w[kTileWeightRows];
  for (int r = 0; r < kTileWeightRows; ++r) w[r] = w_rows[r];
  auto step = [&](int64_t i) __attribute__((always_inline)) {
    F x0 = Simd::load(panel + i * kPanelRows);
    F x1 = Simd::load(panel + i * kPanelRows + 16);
#pragma GCC unroll 12
    for (int r = 0; r < kTileWeightRows; ++r) {
      F weight = _mm512_set1_ps(w[r][i]);
      acc[r][0] = Simd::fma(weight, x0, acc[r][0]);
      acc[r][1] = Simd::fma(weight, x1, acc[r][1]);
    }
  };
  // The weight rows stream through the hardware prefetchers (software prefetches within a tile measured
  // slower); only the first lines of the next tile's rows are requested during the last steps, so that the
  // next call does not start on cold streams.
  const int64_t ramp_begin = next_tile ? std::max<int64_t>(0, k - kNextTileLines * 16) : k;
  int64_t i = 0;
#pragma GCC unroll 4
  for (; i < ramp_begin; ++i) step(i);
  for (; i < k; ++i) {
    if ((i - ramp_begin) % 16 == 0) {
#pragma GCC unroll 12
      for (int r = 0; r < kTileWeightRows; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(w[r] + kTileWeightRows * k + (i - ramp_begin)), _MM_HINT_T0);
      }
    }
    step(i);
  }
  alignas(64) float out[kTileWeightRows][kPanelRows];
  for (int r = 0; r < kTileWeightRows; ++r) {
    Simd::store(out[r], acc[r][0]);
    Simd::store(out[r] + 16, acc[r][1]);
  }
  for (int row = 0; row < valid_rows; ++row) {
    for (int c = 0; c < valid_columns; ++c) y[row * y_stride + c] = out[c][row];
  }
}

}  // namespace

void pack_panels(const float* x, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, float* packed) {
  const int64_t num_panels = (m + kPanelRows - 1) / kPanelRows;
  for (int64_t p = 0; p < num_panels; ++p) {
    float* out = packed + p * kPanelRows * k;
    for (int row = 0; row < kPanelRows; ++row) {
      int64_t x_row = p * kPanelRows + row;
      const float* in = x + x_row * k;
      for (int64_t i = k_begin; i < k_end; ++i) out[i * kPanelRows + row] = x_row < m ? in[i] : 0.0f;
    }
  }
}

void matmul_columns(const float* panels, int64_t m, const float* w, int64_t k, int64_t column_begin, int64_t column_end,
                    float* y, int64_t n) {
  const int64_t num_panels = (m + kPanelRows - 1) / kPanelRows;
  const float* w_rows[kTileWeightRows];
  for (int64_t column = column_begin; column < column_end; column += kTileWeightRows) {
    int columns = static_cast<int>(std::min<int64_t>(kTileWeightRows, column_end - column));
    for (int r = 0; r < kTileWeightRows; ++r) w_rows[r] = w + (column + std::min(r, columns - 1)) * k;
    for (int64_t p = 0; p < num_panels; ++p) {
      int rows = static_cast<int>(std::min<int64_t>(kPanelRows, m - p * kPanelRows));
      bool next_tile = column + kTileWeightRows < column_end && p + 1 == num_panels;
      tile(panels + p * kPanelRows * k, w_rows, k, y + p * kPanelRows * n + column, n, rows, columns, next_tile);
    }
  }
}

}  // namespace recgpt::avx512_panel

#pragma GCC pop_options

namespace recgpt {

void f32_pack_panels(const float* x, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, float* packed) {
  avx512_panel::pack_panels(x, m, k, k_begin, k_end, packed);
}

void f32_panel_matmul_columns(const float* panels, int64_t m, const float* w, int64_t k, int64_t column_begin,
                              int64_t column_end, float* y, int64_t n) {
  avx512_panel::matmul_columns(panels, m, w, k, column_begin, column_end, y, n);
}

}  // namespace recgpt
