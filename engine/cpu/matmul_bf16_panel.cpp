// The bf16 panel matmul (VDPBF16PS, CPUs with AVX512_BF16 and no AMX) for every m from a few rows up; see
// matmul_panel_impl.inc. A step covers one pair of k: x rounded to bf16 is packed as pairs, and each weight
// pair is broadcast as one 32-bit element, so one VDPBF16PS does two multiply-adds per x row. x is rounded as it
// is packed.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx512.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")

namespace recgpt::avx512_bf16_panel {
namespace {

constexpr int kPanelTileColumns = kBf16PanelTileColumns;
#include "engine/cpu/matmul_panel_impl.inc"

struct Bf16Step {
  using Weight = uint16_t;
  static constexpr int kElements = 2;
  static __m512bh load_x(const uint32_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
  static __m512bh broadcast(const uint16_t* w) {
    int32_t pair;
    std::memcpy(&pair, w, sizeof(pair));
    return (__m512bh)_mm512_set1_epi32(pair);
  }
  static __m512 multiply_add(__m512 acc, __m512bh x, __m512bh w) { return _mm512_dpbf16_ps(acc, x, w); }
};

}  // namespace

// x rounded to bf16 as it is packed: each row's 32 values of 16 pairs of k become one vector of 16 pairs.
void pack(const float* x, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, uint16_t* packed) {
  using Simd = avx512::Simd;
  panel::pack_panels_for(m, k / 2, k_begin / 2, k_end / 2, reinterpret_cast<uint32_t*>(packed),
                         [&](int64_t row, int64_t unit, int count) {
                           const float* values = x + row * k + 2 * unit;
                           const __m256i low = Simd::narrow_bf16(Simd::load_partial(values, 2 * count));
                           const __m256i high = Simd::narrow_bf16(Simd::load_partial(values + 16, 2 * count - 16));
                           return _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1));
                         });
}

void matmul_columns(const uint16_t* panels, int64_t m, const uint16_t* w, WeightLayout layout, int64_t k,
                    int64_t column_begin, int64_t column_end, float* y, int64_t n) {
  panel::matmul_columns_in<Bf16Step>(layout, reinterpret_cast<const uint32_t*>(panels), m, w, k, column_begin,
                                     column_end, y, n);
}

}  // namespace recgpt::avx512_bf16_panel

#pragma GCC pop_options

namespace recgpt {

void bf16_pack_panels(const float* x, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, uint16_t* packed) {
  avx512_bf16_panel::pack(x, m, k, k_begin, k_end, packed);
}

void bf16_panel_matmul_columns(const uint16_t* panels, int64_t m, const uint16_t* w, WeightLayout layout, int64_t k,
                               int64_t column_begin, int64_t column_end, float* y, int64_t n) {
  avx512_bf16_panel::matmul_columns(panels, m, w, layout, k, column_begin, column_end, y, n);
}

}  // namespace recgpt
