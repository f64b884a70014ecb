// AVX-512 (F, BW, VL, DQ + FMA) vector operations for the kernels compiled for that instruction set.
//
// Internal to engine/cpu. Everything here carries the target attribute through the pragma, so it may only run
// after cpu_features() reported `avx512`. Include standard headers before this one: the pragma must not apply
// to them.
#pragma once

// GCC 12's AVX-512 intrinsics initialise their "undefined" vectors from themselves (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")

namespace recgpt::avx512 {

struct Simd {
  using F = __m512;
  static constexpr int kLanes = 16;

  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float value) { return _mm512_set1_ps(value); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static __mmask16 first_lanes(int64_t count) {  // count may lie outside [0, kLanes]
    return count >= kLanes ? __mmask16(0xffff) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1u);
  }
  // Loads/stores of the first `count` < kLanes elements; the other lanes read as zero.
  static F load_partial(const float* p, int64_t count) { return _mm512_maskz_loadu_ps(first_lanes(count), p); }
  static void store_partial(float* p, F v, int64_t count) { _mm512_mask_storeu_ps(p, first_lanes(count), v); }

  static F widen_bf16(__m256i bits) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)); }
  static F load_bf16(const uint16_t* p) { return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static F load_bf16_partial(const uint16_t* p, int64_t count) {
    return widen_bf16(_mm256_maskz_loadu_epi16(first_lanes(count), p));
  }
  // Round to nearest even as f32_to_bf16 in engine/dtype.h does (NaN stays a quiet NaN).
  static __m256i narrow_bf16(F v) {
    __m512i bits = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
  }
  static void store_bf16(uint16_t* p, F v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow_bf16(v)); }
  static void store_bf16_partial(uint16_t* p, F v, int64_t count) {
    _mm256_mask_storeu_epi16(p, first_lanes(count), narrow_bf16(v));
  }

  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  // 1 / v to ~1 ulp: 14-bit estimate and one Newton step (a 512-bit division issues once per ~16 cycles).
  static F reciprocal(F v) {
    F estimate = _mm512_rcp14_ps(v);
    return _mm512_mul_ps(estimate, _mm512_fnmadd_ps(v, estimate, _mm512_set1_ps(2.0f)));
  }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
  static float reduce_add(F v) { return _mm512_reduce_add_ps(v); }
  static float reduce_max(F v) { return _mm512_reduce_max_ps(v); }
  // Lanes at index >= count replaced by `fill`.
  static F keep_first(F v, int64_t count, F fill) { return _mm512_mask_blend_ps(first_lanes(count), fill, v); }
  // Bit i set where lane i of v >= threshold (false for NaN); v where so, else 0.
  static uint32_t mask_at_least(F v, F threshold) { return _mm512_cmp_ps_mask(v, threshold, _CMP_GE_OQ); }
  static F keep_at_least(F v, F threshold) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, threshold, _CMP_GE_OQ), v);
  }

  // exp(x) for x <= 88.7 (Cephes polynomial, ~2 ulp); very negative x and -inf give 0.
  static F exp(F x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.7f), x);  // operand order keeps NaN
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    F n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    F p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);  // p * 2^n, flushing to 0 below the normal range
  }

  // In-place transpose of a kLanes x kLanes matrix of 32-bit elements held as kLanes row vectors.
  static void transpose(F* rows) {
    F t[16];
    for (int i = 0; i < 8; ++i) {  // interleave pairs of rows
      t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // 64-bit pairs of groups of four rows
      rows[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      rows[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      rows[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      rows[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {  // 128-bit quarters of groups of eight rows
      t[i] = _mm512_shuffle_f32x4(rows[i], rows[4 + i], _MM_SHUFFLE(2, 0, 2, 0));
      t[4 + i] = _mm512_shuffle_f32x4(rows[i], rows[4 + i], _MM_SHUFFLE(3, 1, 3, 1));
      t[8 + i] = _mm512_shuffle_f32x4(rows[8 + i], rows[12 + i], _MM_SHUFFLE(2, 0, 2, 0));
      t[12 + i] = _mm512_shuffle_f32x4(rows[8 + i], rows[12 + i], _MM_SHUFFLE(3, 1, 3, 1));
    }
    for (int i = 0; i < 8; ++i) {
      rows[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], _MM_SHUFFLE(2, 0, 2, 0));
      rows[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], _MM_SHUFFLE(3, 1, 3, 1));
    }
  }

  // Sums of kLanes vectors: lane i of the result is the sum of v[i]'s lanes (a transposing tree, 46 instructions).
  static F reduce_add_lanes(const F* v) {
    F s1[8], s2[4], s3[2];
    for (int a = 0; a < 8; ++a) {
      s1[a] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * a], v[2 * a + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_f32x4(v[2 * a], v[2 * a + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int b = 0; b < 4; ++b) {  // quarter q of s2[b]: partial sums of v[4b + q]
      s2[b] = _mm512_add_ps(_mm512_shuffle_f32x4(s1[2 * b], s1[2 * b + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_f32x4(s1[2 * b], s1[2 * b + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int c = 0; c < 2; ++c) {  // quarter q of s3[c]: two partials of v[8c + q], two of v[8c + 4 + q]
      s3[c] = _mm512_add_ps(_mm512_shuffle_ps(s2[2 * c], s2[2 * c + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_ps(s2[2 * c], s2[2 * c + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    // Element 4q + t: sum of v[q + 4t].
    F sums = _mm512_add_ps(_mm512_shuffle_ps(s3[0], s3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_ps(s3[0], s3[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, sums);
  }

  // Sums of kLanes / 2 vectors into out[0..kLanes / 2).
  static void reduce_add_half(const F* v, float* out) {
    F s1[4], s2[2];
    for (int a = 0; a < 4; ++a) {
      s1[a] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * a], v[2 * a + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_f32x4(v[2 * a], v[2 * a + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int b = 0; b < 2; ++b) {
      s2[b] = _mm512_add_ps(_mm512_shuffle_f32x4(s1[2 * b], s1[2 * b + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_f32x4(s1[2 * b], s1[2 * b + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    F s3 = _mm512_add_ps(_mm512_shuffle_ps(s2[0], s2[1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(s2[0], s2[1], _MM_SHUFFLE(3, 2, 3, 2)));
    // Element 4q: sum of v[q]; element 4q + 2: sum of v[4 + q].
    F sums = _mm512_add_ps(s3, _mm512_permute_ps(s3, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm256_storeu_ps(out, _mm512_castps512_ps256(_mm512_permutexvar_ps(order, sums)));
  }
};

}  // namespace recgpt::avx512

#pragma GCC pop_options
