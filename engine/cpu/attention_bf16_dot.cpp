// The decode attention kernel for bf16 KV pools on AVX512_BF16 (isa_kernels.h, attend_bf16_dot).
//
// Why its own kernel: the f32 decode path (attention_kernels.inc, attend_direct) widens every bf16 K and V element
// to f32 and issues a software prefetch per line; with the KV already in L2 (4 sequences of 32-128 tokens) it
// computed at 31-35 GB/s of KV on 2 threads of Zen 5, short of the memory's ~55. Here a vector's lanes are the
// item's query rows (kv head x query row, at most 16): one slot's K run (all the item's heads side by side) gives
// every row's score in one pass of VDPBF16PS over the rows as stored, and its V run every row's update; without
// its prefetches it computed at 48-55 GB/s in L2. VDPBF16PS needs the queries and the softmax weights in bf16.
//
// The order of reads is not what makes it faster: random 32 KiB blocks read in address order stream at ~0.58 of
// the read bandwidth, head by head (the f32 path's order) at ~0.89 (`recgpt_kernels_bench 2 kv_reads`, 2026-12-04).
// What keeps this kernel's reads flowing is requesting each slot's V run while its K run is scored, so that the
// two stream together.
//
// Per chunk of 16 slots: scores slot by slot (each slot's V run requested into L1 meanwhile, and the next chunk's
// K runs into L2); the chunk's online-softmax update, all rows at once; then V
// by pairs of slots, each pair's two rows interleaved per element so that one VDPBF16PS adds both slots' weighted
// values. The outputs accumulate in that pair order and are put back in element order at the end.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx512.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")

namespace recgpt::avx512_bf16 {
namespace {

using avx512::Simd;
using F = __m512;
constexpr int kLanes = 16;  // slots per chunk, and query rows per vector
static_assert(kBf16DecodeItemRows == kLanes);

// Slot pairs per chunk: their bf16 weights, lane = row, as (first slot's, second slot's) in one 32-bit element.
using PairWeights = uint32_t[kLanes / 2][kLanes];

// Row `row`'s accumulated output, in pair order: vector 2g holds elements 32g + 8L + t at lane 4L + t, vector
// 2g + 1 elements 32g + 8L + 4 + t (what VPUNPCKLWD / VPUNPCKHWD of two bf16 rows give, per 128-bit lane L).
void pair_order_to_elements(const float* pair_order, int head_dim, float scale, float* out) {
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const F factor = Simd::set1(scale);
  for (int d = 0; d < head_dim; d += 32) {
    const F low = Simd::load(pair_order + d), high = Simd::load(pair_order + d + 16);
    Simd::store(out + d, Simd::mul(_mm512_permutex2var_ps(low, first, high), factor));
    Simd::store(out + d + 16, Simd::mul(_mm512_permutex2var_ps(low, second, high), factor));
  }
}

// Every row's scores for `slot`'s keys (`keys`: the item's heads side by side): lane hr = head * kRows + row.
template <int kRows>
F slot_scores(const uint16_t* keys, int heads, int head_dim, const uint16_t (*queries)[kMaxAttentionHeadDim]) {
  constexpr int kMaxHeads = kLanes / kRows;
  F acc[kLanes];
#pragma GCC unroll 16
  for (int i = 0; i < kLanes; ++i) acc[i] = Simd::zero();
  for (int d = 0; d < head_dim; d += 32) {
#pragma GCC unroll 16
    for (int h = 0; h < kMaxHeads; ++h) {
      if (h < heads) {
        const auto key = (__m512bh)_mm512_loadu_si512(keys + h * head_dim + d);
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
          acc[h * kRows + r] =
              _mm512_dpbf16_ps(acc[h * kRows + r], (__m512bh)_mm512_load_si512(queries[h * kRows + r] + d), key);
        }
      }
    }
  }
  return Simd::reduce_add_lanes(acc);
}

// output[hr] += weights of slots (first, second) · their values, for every row.
template <int kRows>
void add_pair_values(const uint16_t* first, const uint16_t* second, const uint32_t* pair_weights, int heads,
                     int head_dim, float (*output)[kMaxAttentionHeadDim]) {
  constexpr int kMaxHeads = kLanes / kRows;
#pragma GCC unroll 16
  for (int h = 0; h < kMaxHeads; ++h) {
    if (h >= heads) break;
    __m512bh weight[kRows];
    for (int r = 0; r < kRows; ++r)
      weight[r] = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair_weights[h * kRows + r]));
    for (int d = 0; d < head_dim; d += 32) {
      const __m512i a = _mm512_loadu_si512(first + h * head_dim + d);
      const __m512i b = _mm512_loadu_si512(second + h * head_dim + d);
      const auto low = (__m512bh)_mm512_unpacklo_epi16(a, b), high = (__m512bh)_mm512_unpackhi_epi16(a, b);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        float* out = output[h * kRows + r] + d;
        Simd::store(out, _mm512_dpbf16_ps(Simd::load(out), weight[r], low));
        Simd::store(out + 16, _mm512_dpbf16_ps(Simd::load(out + 16), weight[r], high));
      }
    }
  }
}

template <int kRows>
void attend(const AttentionWorkItem& item) {
  const KvLayerView& kv = *item.kv;
  const AttentionSequence& sequence = *item.sequence;
  const int group = item.num_heads / kv.num_kv_heads;
  const int head_dim = kv.head_dim;
  const int heads = item.kv_head_end - item.kv_head_begin;
  const int rows = heads * kRows;
  const int32_t end_position = sequence.first_position + item.query_end;
  const int64_t slot_stride = int64_t{kv.num_kv_heads} * head_dim;
  const int64_t run_bytes = int64_t{heads} * head_dim * static_cast<int64_t>(sizeof(uint16_t));
  const auto* keys = static_cast<const uint16_t*>(kv.key) + int64_t{item.kv_head_begin} * head_dim;
  const auto* values = static_cast<const uint16_t*>(kv.value) + int64_t{item.kv_head_begin} * head_dim;

  alignas(64) uint16_t queries[kLanes][kMaxAttentionHeadDim];
  alignas(64) float output[kLanes][kMaxAttentionHeadDim];
  alignas(64) int32_t position[kLanes];
  std::fill(position, position + kLanes, -1);  // lanes past `rows` see no key
  for (int hr = 0; hr < rows; ++hr) {
    const RowIndex index = row_index(item, group, kRows, hr);
    const float* q = sequence.queries + (static_cast<int64_t>(index.query) * item.num_heads + index.head) * head_dim;
    for (int d = 0; d < head_dim; d += 32) {
      _mm512_store_si512(queries[hr] + d, (__m512i)_mm512_cvtne2ps_pbh(Simd::load(q + d + 16), Simd::load(q + d)));
      Simd::store(output[hr] + d, Simd::zero());
      Simd::store(output[hr] + d + 16, Simd::zero());
    }
    position[hr] = sequence.first_position + index.query;
  }
  const __m512i positions = _mm512_load_si512(position);
  const F minus_infinity = Simd::set1(-std::numeric_limits<float>::infinity());
  const F scale = Simd::set1(item.scale);
  F max_score = minus_infinity;
  F sum = Simd::zero();  // Σ exp(score - max_score), unrounded weights
  int64_t slots[kLanes], next_slots[kLanes];
  int count = std::min<int32_t>(kLanes, end_position);
  for (int j = 0; j < count; ++j) slots[j] = slot_of(kv, sequence, j);

  for (int32_t chunk_begin = 0; chunk_begin < end_position; chunk_begin += kLanes) {
    const int next_count = std::clamp<int32_t>(end_position - chunk_begin - kLanes, 0, kLanes);
    for (int j = 0; j < next_count; ++j) next_slots[j] = slot_of(kv, sequence, chunk_begin + kLanes + j);

    F scores[kLanes];
    for (int j = 0; j < count; ++j) {
      const auto* value_run = reinterpret_cast<const char*>(values + slots[j] * slot_stride);
      for (int64_t byte = 0; byte < run_bytes; byte += 64) _mm_prefetch(value_run + byte, _MM_HINT_T0);
      if (j < next_count) {
        const auto* next_key_run = reinterpret_cast<const char*>(keys + next_slots[j] * slot_stride);
        for (int64_t byte = 0; byte < run_bytes; byte += 64) _mm_prefetch(next_key_run + byte, _MM_HINT_T1);
      }
      scores[j] = Simd::mul(slot_scores<kRows>(keys + slots[j] * slot_stride, heads, head_dim, queries), scale);
    }

    // The chunk's online-softmax update; a row with no visible key yet keeps max -inf and weights 0.
    __mmask16 visible[kLanes];
    F chunk_max = minus_infinity;
    for (int j = 0; j < count; ++j) {
      visible[j] = _mm512_cmp_epi32_mask(positions, _mm512_set1_epi32(chunk_begin + j), _MM_CMPINT_NLT);
      chunk_max = _mm512_mask_max_ps(chunk_max, visible[j], chunk_max, scores[j]);
    }
    const F new_max = Simd::max(max_score, chunk_max);
    const __mmask16 seen = _mm512_cmp_ps_mask(new_max, minus_infinity, _CMP_NEQ_OQ);
    const F correction = _mm512_mask_blend_ps(seen, Simd::set1(1.0f), Simd::exp(Simd::sub(max_score, new_max)));
    F chunk_sum = Simd::zero();
    alignas(64) PairWeights pair_weights;
    for (int j = 0; j < count; j += 2) {
      const F first = _mm512_maskz_mov_ps(visible[j] & seen, Simd::exp(Simd::sub(scores[j], new_max)));
      const F second = j + 1 < count
                           ? _mm512_maskz_mov_ps(visible[j + 1] & seen, Simd::exp(Simd::sub(scores[j + 1], new_max)))
                           : Simd::zero();
      chunk_sum = Simd::add(chunk_sum, Simd::add(first, second));
      const __m512i low = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(first));
      const __m512i high = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(second));
      _mm512_store_si512(pair_weights[j / 2], _mm512_or_si512(low, _mm512_slli_epi32(high, 16)));
    }
    sum = Simd::fma(sum, correction, chunk_sum);
    max_score = new_max;
    if (_mm512_cmp_ps_mask(correction, Simd::set1(1.0f), _CMP_NEQ_OQ) != 0) {
      alignas(64) float factors[kLanes];
      Simd::store(factors, correction);
      for (int hr = 0; hr < rows; ++hr) {
        const F factor = Simd::set1(factors[hr]);
        for (int d = 0; d < head_dim; d += kLanes) {
          Simd::store(output[hr] + d, Simd::mul(Simd::load(output[hr] + d), factor));
        }
      }
    }

    for (int j = 0; j < count; j += 2) {
      const uint16_t* first = values + slots[j] * slot_stride;
      // An odd last slot pairs with itself at weight 0.
      const uint16_t* second = j + 1 < count ? values + slots[j + 1] * slot_stride : first;
      add_pair_values<kRows>(first, second, pair_weights[j / 2], heads, head_dim, output);
    }
    std::copy(next_slots, next_slots + next_count, slots);
    count = next_count;
  }

  alignas(64) float sums[kLanes];
  Simd::store(sums, sum);
  for (int hr = 0; hr < rows; ++hr) {
    const RowIndex index = row_index(item, group, kRows, hr);
    float* out = sequence.output + (static_cast<int64_t>(index.query) * item.num_heads + index.head) * head_dim;
    pair_order_to_elements(output[hr], head_dim, 1.0f / sums[hr], out);
  }
}

}  // namespace
}  // namespace recgpt::avx512_bf16

#pragma GCC pop_options

namespace recgpt {

void attend_bf16_dot(const AttentionWorkItem& item) {
  const int rows_per_head = (item.query_end - item.query_begin) * (item.num_heads / item.kv->num_kv_heads);
  switch (rows_per_head) {
    case 1: return avx512_bf16::attend<1>(item);
    case 2: return avx512_bf16::attend<2>(item);
    case 3: return avx512_bf16::attend<3>(item);
    default: return avx512_bf16::attend<4>(item);
  }
}

}  // namespace recgpt
