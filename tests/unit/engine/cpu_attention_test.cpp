#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/cpu/attention.h"
#include "tests/unit/engine/cpu_kernel_test_support.h"

namespace recgpt {
namespace {

using testing::kernel_paths;
using testing::random_floats;
using testing::ScopedCpuFeatures;

struct SequenceSpec {
  int32_t num_queries;
  int32_t first_position;
};

// A KV pool whose blocks are handed to sequences in a shuffled order, filled through store_kv.
struct PagedCache {
  PagedCache(DType dtype, int block_size, int kv_heads, int head_dim, int num_blocks)
      : dtype(dtype),
        row(static_cast<int64_t>(kv_heads) * head_dim),
        key(num_blocks * block_size * row * 2),
        value(num_blocks * block_size * row * 2),
        view{key.data(), value.data(), dtype, block_size, kv_heads, head_dim},
        free_blocks(num_blocks),
        store_pool(2) {
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::shuffle(free_blocks.begin(), free_blocks.end(), std::mt19937(3));
  }

  // A block table for `num_positions` positions, with keys and values stored for every position.
  std::vector<int32_t> add_sequence(int32_t num_positions, uint32_t seed) {
    std::vector<int32_t> table;
    for (int32_t p = 0; p < num_positions; p += view.block_size) {
      table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    std::vector<float> k = random_floats(num_positions * row, seed), v = random_floats(num_positions * row, seed + 1);
    std::vector<int64_t> slots(num_positions);
    for (int32_t p = 0; p < num_positions; ++p) {
      slots[p] = int64_t{table[p / view.block_size]} * view.block_size + p % view.block_size;
    }
    store_kv(store_pool, view, slots.data(), k.data(), v.data(), num_positions);
    return table;
  }

  // Element `d` of kv head `head` at slot `slot`, as stored.
  double read(const std::vector<uint16_t>& pool, int64_t slot, int head, int d) const {
    int64_t index = slot * row + int64_t{head} * view.head_dim + d;
    if (dtype == DType::kBF16) return bf16_to_f32(pool[index]);
    return reinterpret_cast<const float*>(pool.data())[index];
  }

  DType dtype;
  int64_t row;
  std::vector<uint16_t> key, value;  // storage for either dtype (f32 uses twice the elements)
  KvLayerView view;
  std::vector<int32_t> free_blocks;
  ThreadPool store_pool;  // writes K and V as the backend does, over two threads
};

// Softmax attention in double on the stored keys and values; with `round_queries`, on the queries rounded to bf16
// (as the bf16 decode kernel takes them).
std::vector<double> reference_attention(const PagedCache& cache, const AttentionSequence& sequence, int num_heads,
                                        float scale, bool round_queries) {
  const KvLayerView& kv = cache.view;
  const int group = num_heads / kv.num_kv_heads;
  std::vector<double> out(int64_t{sequence.num_queries} * num_heads * kv.head_dim);
  for (int32_t q = 0; q < sequence.num_queries; ++q) {
    for (int h = 0; h < num_heads; ++h) {
      const float* stored_query = sequence.queries + (int64_t{q} * num_heads + h) * kv.head_dim;
      std::vector<double> query(stored_query, stored_query + kv.head_dim);
      if (round_queries) {
        for (double& element : query) element = bf16_to_f32(f32_to_bf16(static_cast<float>(element)));
      }
      int32_t last = sequence.first_position + q;
      std::vector<double> scores(last + 1);
      for (int32_t p = 0; p <= last; ++p) {
        int64_t slot = int64_t{sequence.block_table[p / kv.block_size]} * kv.block_size + p % kv.block_size;
        double dot = 0;
        for (int d = 0; d < kv.head_dim; ++d) dot += query[d] * cache.read(cache.key, slot, h / group, d);
        scores[p] = dot * scale;
      }
      double max_score = *std::max_element(scores.begin(), scores.end()), total = 0;
      for (double& s : scores) total += (s = std::exp(s - max_score));
      for (int32_t p = 0; p <= last; ++p) {
        int64_t slot = int64_t{sequence.block_table[p / kv.block_size]} * kv.block_size + p % kv.block_size;
        for (int d = 0; d < kv.head_dim; ++d) {
          out[(int64_t{q} * num_heads + h) * kv.head_dim + d] +=
              scores[p] / total * cache.read(cache.value, slot, h / group, d);
        }
      }
    }
  }
  return out;
}

// Outputs are convex combinations of values in [-1, 1]; the kernel's f32 sums over < 200 keys and its ~2 ulp exp
// keep the error well under 1e-5, so 2e-5 absolute is a tight bound (bf16 rounding is in the stored values,
// which the reference reads too). Sequences on the bf16 decode kernel are held to its contract
// (uses_bf16_decode_attention): the reference takes bf16 queries, and the weights' rounding adds up to 2^-9 of
// max |v| = 1. Returns how many sequences ran on that kernel.
int check_attention(DType dtype, int block_size, int num_heads, int kv_heads, int head_dim,
                    const std::vector<SequenceSpec>& specs) {
  ThreadPool pool(2);
  int num_blocks = 0;
  for (const SequenceSpec& spec : specs)
    num_blocks += (spec.first_position + spec.num_queries + block_size - 1) / block_size;
  PagedCache cache(dtype, block_size, kv_heads, head_dim, num_blocks);
  std::vector<std::vector<int32_t>> tables;
  std::vector<std::vector<float>> queries, outputs;
  std::vector<AttentionSequence> sequences;
  for (size_t s = 0; s < specs.size(); ++s) {
    tables.push_back(cache.add_sequence(specs[s].first_position + specs[s].num_queries, 100 + s));
    queries.push_back(random_floats(int64_t{specs[s].num_queries} * num_heads * head_dim, 200 + s, -2.0f, 2.0f));
    outputs.emplace_back(queries.back().size(), 0.0f);
  }
  for (size_t s = 0; s < specs.size(); ++s) {
    sequences.push_back(
        {queries[s].data(), outputs[s].data(), specs[s].num_queries, specs[s].first_position, tables[s]});
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  paged_attention(pool, cache.view, sequences, num_heads, scale);
  int bf16_decode_sequences = 0;
  for (size_t s = 0; s < specs.size(); ++s) {
    const bool bf16_decode = uses_bf16_decode_attention(cache.view, sequences[s], num_heads);
    bf16_decode_sequences += bf16_decode;
    const double tolerance = bf16_decode ? 2e-5 + std::ldexp(1.0, -9) : 2e-5;
    std::vector<double> expected = reference_attention(cache, sequences[s], num_heads, scale, bf16_decode);
    for (size_t i = 0; i < expected.size(); ++i) {
      INFO("sequence " << s << " element " << i << (bf16_decode ? " (bf16 decode kernel)" : ""));
      REQUIRE(std::fabs(outputs[s][i] - expected[i]) <= tolerance);
    }
  }
  return bf16_decode_sequences;
}

TEST_CASE("paged attention matches a double reference for mixed prefill, cached prefix and decode",
          "[cpu][attention]") {
  const std::vector<SequenceSpec> batch = {{37, 0}, {20, 45}, {1, 100}, {1, 0}, {70, 3}};
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (int kv_heads : {4, 2, 1}) {  // 4 query heads: GQA ratios 1, 2, 4
        INFO(path.name << " " << dtype_name(dtype) << " kv_heads " << kv_heads);
        check_attention(dtype, 16, 4, kv_heads, 64, batch);
      }
    }
  }
}

TEST_CASE("paged attention handles block sizes that do not match the vector width", "[cpu][attention]") {
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (int block_size : {1, 5, 24}) {
      INFO(path.name << " block_size " << block_size);
      check_attention(DType::kBF16, block_size, 4, 2, 32, {{9, 0}, {3, 17}, {1, 40}});
    }
  }
}

TEST_CASE("paged attention with Qwen3-0.6B heads: 16 query heads over 8 kv heads of 128", "[cpu][attention]") {
  check_attention(DType::kBF16, 16, 16, 8, 128, {{33, 0}, {1, 150}, {5, 60}});
}

TEST_CASE("paged attention splits a single decode sequence's kv heads over the threads", "[cpu][attention]") {
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    INFO(path.name);
    check_attention(DType::kF32, 16, 16, 8, 128, {{1, 300}});
    check_attention(DType::kBF16, 32, 8, 8, 64, {{2, 77}});
  }
}

TEST_CASE("bf16 decode kernel: many chunks and blocks, 1 to 4 rows per kv head, heads split over items",
          "[cpu][attention][bf16_decode]") {
  if (!detected_cpu_features().avx512_bf16) {
    WARN("SKIPPED: this CPU has no AVX512_BF16, so paged attention has no bf16 decode kernel here");
    return;
  }
  // {num_heads, kv_heads}: query heads per kv head 1, 2, 3 and 4; decode steps of 1 and 2 queries; contexts that
  // end mid-chunk (odd slot counts) and within the first chunk; block sizes off the 16-slot chunk.
  const std::vector<std::pair<int, int>> shapes = {{8, 8}, {16, 8}, {6, 2}, {16, 4}};
  for (auto [num_heads, kv_heads] : shapes) {
    for (int block_size : {16, 7, 64}) {
      INFO("heads " << num_heads << "/" << kv_heads << " block_size " << block_size);
      const int group = num_heads / kv_heads;
      std::vector<SequenceSpec> batch = {{1, 300}, {1, 0}, {1, 16}, {1, 45}};
      if (group <= 2) batch.push_back({2, 90});
      const int on_kernel = check_attention(DType::kBF16, block_size, num_heads, kv_heads, 128, batch);
      CHECK(on_kernel == static_cast<int>(batch.size()));
      // One sequence alone: its kv heads split over several items.
      CHECK(check_attention(DType::kBF16, block_size, num_heads, kv_heads, 64, {{1, 200}}) == 1);
    }
  }
}

TEST_CASE("store_kv writes each token's rows at its slot, rounding to bf16", "[cpu][attention]") {
  PagedCache cache(DType::kBF16, 4, 2, 16, 3);
  std::vector<float> k = random_floats(2 * 32, 1), v = random_floats(2 * 32, 2);
  int64_t slots[2] = {9, 2};
  store_kv(cache.store_pool, cache.view, slots, k.data(), v.data(), 2);
  for (int t = 0; t < 2; ++t) {
    for (int i = 0; i < 32; ++i) {
      REQUIRE(cache.read(cache.key, slots[t], i / 16, i % 16) == bf16_to_f32(f32_to_bf16(k[t * 32 + i])));
      REQUIRE(cache.read(cache.value, slots[t], i / 16, i % 16) == bf16_to_f32(f32_to_bf16(v[t * 32 + i])));
    }
  }
}

}  // namespace
}  // namespace recgpt
