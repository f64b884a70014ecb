// The AVX512_BF16 matmul kernel: x and W both bf16, VDPBF16PS over pairs of k, f32 accumulators.
#include <algorithm>
#include <cstdint>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx512.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")

namespace recgpt::avx512_bf16 {
namespace {

using avx512::Simd;

// 3 x 8 accumulators + 3 x rows + 1 weight vector of the 32 registers. Each step of 32 k loads 11 vectors for
// 24 VDPBF16PS.
constexpr int kTileRows = 3;
constexpr int kTileCols = 8;
constexpr int kStep = 32;  // bf16 elements per vector

inline __m512bh load_pairs(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
inline __m512bh load_pairs_partial(const uint16_t* p, int64_t count) {
  return (__m512bh)_mm512_maskz_loadu_epi16(static_cast<__mmask32>((uint64_t{1} << count) - 1), p);
}

template <int kRows>
void strip_rows(const MatmulStrip& strip) {
  const uint16_t* x = static_cast<const uint16_t*>(strip.x);
  const uint16_t* weights = static_cast<const uint16_t*>(strip.w);
  const int64_t peel = strip_peel(strip.w, strip.k, sizeof(uint16_t), 64);
  for (int64_t column = 0; column < strip.cols; column += kTileCols) {
    const int cols = static_cast<int>(std::min<int64_t>(kTileCols, strip.cols - column));
    const uint16_t* w[kTileCols];
    for (int j = 0; j < kTileCols; ++j)
      w[j] = weights + (column + std::min(j, cols - 1)) * strip.k;  // past the edge: the last row again, not stored
    __m512 acc[kRows][kTileCols];
#pragma GCC unroll 8
    for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < kTileCols; ++j) acc[i][j] = _mm512_setzero_ps();
    }
    auto step = [&](int64_t offset, int64_t count) __attribute__((always_inline)) {
      __m512bh xv[kRows];
#pragma GCC unroll 8
      for (int i = 0; i < kRows; ++i) {
        const uint16_t* row = x + i * strip.x_stride + offset;
        xv[i] = count == kStep ? load_pairs(row) : load_pairs_partial(row, count);
      }
#pragma GCC unroll 8
      for (int j = 0; j < kTileCols; ++j) {
        __m512bh wv = count == kStep ? load_pairs(w[j] + offset) : load_pairs_partial(w[j] + offset, count);
#pragma GCC unroll 8
        for (int i = 0; i < kRows; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv[i], wv);
      }
    };
    int64_t offset = peel;
    if (peel > 0) step(0, peel);
    for (; offset + kStep <= strip.k; offset += kStep) step(offset, kStep);
    if (offset < strip.k) step(offset, strip.k - offset);
#pragma GCC unroll 8  // else GCC 12 may keep the accumulators in memory through the k loop
    for (int i = 0; i < kRows; ++i) {
      float sums[kTileCols];
      Simd::reduce_add_half(acc[i], sums);
      for (int j = 0; j < cols; ++j) strip.y[i * strip.y_stride + column + j] = sums[j];
    }
  }
}

void run_strip(const MatmulStrip& strip) {
  if (strip.rows == 1) return strip_rows<1>(strip);
  if (strip.rows == 2) return strip_rows<2>(strip);
  return strip_rows<kTileRows>(strip);
}
}  // namespace
}  // namespace recgpt::avx512_bf16

#pragma GCC pop_options

namespace recgpt {

MatmulKernel bf16_dot_matmul_kernel() {
  return {avx512_bf16::kTileRows, avx512_bf16::kTileCols, &avx512_bf16::run_strip};
}

}  // namespace recgpt
