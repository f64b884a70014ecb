// The AVX512_BF16 matmul kernel: x and W both bf16, VDPBF16PS over pairs of k, f32 accumulators; the strip
// kernel of matmul_strip_impl.inc with these operations.
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

struct Bf16DotOps {
  using Input = uint16_t;
  using Weight = uint16_t;
  using XVector = __m512bh;
  using Acc = __m512;
  static constexpr int kStep = 32;  // bf16 elements per vector
  // Folded loads as GCC chooses: held in a register, decode at batch 4-12 measured 3-5% slower here.
  static constexpr bool kWeightInRegister = false;
  static __m512 zero() { return _mm512_setzero_ps(); }
  static __m512bh load_x(const uint16_t* p, int64_t count) {
    if (count == kStep) return (__m512bh)_mm512_loadu_si512(p);
    return (__m512bh)_mm512_maskz_loadu_epi16(static_cast<__mmask32>((uint64_t{1} << count) - 1), p);
  }
  static __m512bh load_w(const uint16_t* p, int64_t count) { return load_x(p, count); }
  static __m512 multiply_add(__m512 acc, __m512bh x, __m512bh w) { return _mm512_dpbf16_ps(acc, x, w); }
  static void reduce_add_half(const __m512* v, float* out) { Simd::reduce_add_half(v, out); }
};

#include "engine/cpu/matmul_strip_impl.inc"

}  // namespace
}  // namespace recgpt::avx512_bf16

#pragma GCC pop_options

namespace recgpt {

MatmulKernel bf16_dot_matmul_kernel() {
  using namespace avx512_bf16;
  return {kTileRows, kTileCols, &strip::run<Bf16DotOps, kTileRows, kTileCols>,
          &strip::run<Bf16DotOps, kTileRows, kTileCols, /*kTiled=*/true>};
}

}  // namespace recgpt
