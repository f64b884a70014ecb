// The f32 panel matmul for a few to a few dozen rows of x (batched decode); see matmul_panel_impl.inc. Compare
// the dot form (isa_kernels_impl.inc), which needs a weight vector per x row and a horizontal reduction per output.
#include <algorithm>
#include <cstdint>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx512.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")

namespace recgpt::avx512_f32_panel {
namespace {

constexpr int kPanelTileColumns = kF32PanelTileColumns;
#include "engine/cpu/matmul_panel_impl.inc"

struct F32Step {
  using Weight = float;
  static constexpr int kElements = 1;
  static __m512 load_x(const uint32_t* p) { return _mm512_loadu_ps(p); }
  static __m512 broadcast(const float* w) { return _mm512_set1_ps(*w); }
  static __m512 multiply_add(__m512 acc, __m512 x, __m512 w) { return _mm512_fmadd_ps(w, x, acc); }
};

}  // namespace

void pack(const float* x, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, float* packed) {
  panel::pack_panels_for(
      m, k, k_begin, k_end, reinterpret_cast<uint32_t*>(packed),
      [&](int64_t row, int64_t unit, int count) { return avx512::Simd::load_partial(x + row * k + unit, count); });
}

void matmul_columns(const float* panels, int64_t m, const float* w, WeightLayout layout, int64_t k,
                    int64_t column_begin, int64_t column_end, float* y, int64_t n) {
  panel::matmul_columns_in<F32Step>(layout, reinterpret_cast<const uint32_t*>(panels), m, w, k, column_begin,
                                    column_end, y, n);
}

}  // namespace recgpt::avx512_f32_panel

#pragma GCC pop_options

namespace recgpt {

void f32_pack_panels(const float* x, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, float* packed) {
  avx512_f32_panel::pack(x, m, k, k_begin, k_end, packed);
}

void f32_panel_matmul_columns(const float* panels, int64_t m, const float* w, WeightLayout layout, int64_t k,
                              int64_t column_begin, int64_t column_end, float* y, int64_t n) {
  avx512_f32_panel::matmul_columns(panels, m, w, layout, k, column_begin, column_end, y, n);
}

}  // namespace recgpt
