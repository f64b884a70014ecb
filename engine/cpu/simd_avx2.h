// AVX2 + FMA vector operations for the kernels compiled for that instruction set; the same face as
// simd_avx512.h with 8 lanes. Internal to engine/cpu; include standard headers before this one.
#pragma once

// GCC 12's AVX-512 intrinsics initialise their "undefined" vectors from themselves (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstring>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace recgpt::avx2 {

struct Simd {
  using F = __m256;
  static constexpr int kLanes = 8;

  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float value) { return _mm256_set1_ps(value); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static __m256i first_lanes(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count < kLanes ? count : kLanes)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // Loads/stores of the first `count` < kLanes elements; the other lanes read as zero.
  static F load_partial(const float* p, int64_t count) { return _mm256_maskload_ps(p, first_lanes(count)); }
  static void store_partial(float* p, F v, int64_t count) { _mm256_maskstore_ps(p, first_lanes(count), v); }

  static F widen_bf16(__m128i bits) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16)); }
  static F load_bf16(const uint16_t* p) { return widen_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static F load_bf16_partial(const uint16_t* p, int64_t count) {
    uint16_t padded[kLanes] = {};
    std::memcpy(padded, p, static_cast<size_t>(count) * sizeof(uint16_t));
    return load_bf16(padded);
  }
  // Round to nearest even as f32_to_bf16 in engine/dtype.h does (NaN stays a quiet NaN).
  static __m128i narrow_bf16(F v) {
    __m256i bits = _mm256_castps_si256(v);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    __m256i result = _mm256_blendv_epi8(rounded, quiet, nan);
    // Values fit in 16 bits, so the unsigned saturating pack is exact; it interleaves 128-bit lanes.
    __m256i packed = _mm256_packus_epi32(result, result);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0)));
  }
  static void store_bf16(uint16_t* p, F v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), narrow_bf16(v)); }
  static void store_bf16_partial(uint16_t* p, F v, int64_t count) {
    uint16_t narrowed[kLanes];
    store_bf16(narrowed, v);
    std::memcpy(p, narrowed, static_cast<size_t>(count) * sizeof(uint16_t));
  }

  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  // 1 / v to ~2 ulp: 12-bit estimate and one Newton step.
  static F reciprocal(F v) {
    F estimate = _mm256_rcp_ps(v);
    return _mm256_mul_ps(estimate, _mm256_fnmadd_ps(v, estimate, _mm256_set1_ps(2.0f)));
  }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }  // a * b + c
  static float reduce_add(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  static float reduce_max(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
  // Lanes at index >= count replaced by `fill`.
  static F keep_first(F v, int64_t count, F fill) {
    return _mm256_blendv_ps(fill, v, _mm256_castsi256_ps(first_lanes(count)));
  }
  // Bit i set where lane i of v >= threshold (false for NaN); v where so, else 0.
  static uint32_t mask_at_least(F v, F threshold) {
    return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, threshold, _CMP_GE_OQ)));
  }
  static F keep_at_least(F v, F threshold) { return _mm256_and_ps(_mm256_cmp_ps(v, threshold, _CMP_GE_OQ), v); }

  // exp(x) for x <= 88 (larger x give exp(88); Cephes polynomial, ~2 ulp); x below -87.3 (and -inf) gives 0.
  static F exp(F x) {
    F too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);  // operand order keeps NaN
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);
    F n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    F p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(too_small, _mm256_mul_ps(p, _mm256_castsi256_ps(scale)));
  }

  // In-place transpose of a kLanes x kLanes matrix of 32-bit elements held as kLanes row vectors.
  static void transpose(F* rows) {
    F t[8], s[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {
      rows[i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x20);
      rows[4 + i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x31);
    }
  }

  // Sums of kLanes vectors: lane i of the result is the sum of v[i]'s lanes.
  static F reduce_add_lanes(const F* v) {
    F h0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    F h1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
  }
  // Sums of kLanes / 2 vectors into out[0..kLanes / 2).
  static void reduce_add_half(const F* v, float* out) {
    F h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
};

}  // namespace recgpt::avx2

#pragma GCC pop_options
