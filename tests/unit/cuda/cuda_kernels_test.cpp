// Every CUDA kernel against the CPU backend's kernel for the same step, on fresh random data and shapes, outputs
// poisoned before each run. Compiled only where the build has CUDA (tests/CMakeLists.txt); without a GPU each
// test says "SKIPPED:" and ctest counts it as skipped.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda_kernels/device_buffer.h"
#include "cuda_kernels/kernels.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/ops.h"
#include "engine/cpu/thread_pool.h"
#include "tests/unit/cuda/skip_without_gpu.h"
#include "tests/unit/engine/cpu_kernel_test_support.h"
#include "tests/unit/engine/random_models.h"

namespace recgpt::cuda {
namespace {

using testing::random_floats;

// A device copy of `values`.
template <typename T>
DeviceBuffer upload(const std::vector<T>& values) {
  auto allocated = DeviceBuffer::allocate(std::max<size_t>(1, values.size()) * sizeof(T));
  REQUIRE(allocated.is_ok());
  DeviceBuffer buffer = std::move(allocated).value();
  REQUIRE(cudaMemcpy(buffer.as<void>(), values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice) ==
          cudaSuccess);
  return buffer;
}

// `bytes` of device memory, every byte `fill`: 0xff makes f32 and bf16 NaN, so an unwritten output shows.
DeviceBuffer filled(size_t bytes, int fill) {
  auto buffer = DeviceBuffer::allocate(std::max<size_t>(1, bytes));
  REQUIRE(buffer.is_ok());
  REQUIRE(cudaMemset(buffer->as<void>(), fill, bytes) == cudaSuccess);
  return std::move(buffer).value();
}
DeviceBuffer poisoned(size_t bytes) { return filled(bytes, 0xff); }

template <typename T>
std::vector<T> download(const DeviceBuffer& buffer, size_t count) {
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<T> values(count);
  REQUIRE(cudaMemcpy(values.data(), buffer.as<void>(), count * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return values;
}

std::vector<float> bf16_values_as_float(const std::vector<uint16_t>& bits) {
  std::vector<float> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = bf16_to_f32(bits[i]);
  return values;
}

double relative_error(const std::vector<float>& actual, const std::vector<float>& expected) {
  return testing::relative_difference(actual, expected);
}

// The cache element types, FP8 with scales that are not 1 (so a missed scale shows).
struct CacheCase {
  DType dtype;
  float key_scale, value_scale;
};
constexpr CacheCase kCacheCases[] = {{DType::kF32, 1, 1}, {DType::kBF16, 1, 1}, {DType::kFP8E4M3, 0.5f, 0.25f}};

CacheType cache_type_of(DType dtype) {
  return dtype == DType::kF32 ? CacheType::kF32 : dtype == DType::kBF16 ? CacheType::kBF16 : CacheType::kFP8E4M3;
}

// f32 values as cache elements of `dtype` (FP8: e4m3(value / scale), saturated; bf16: nearest even), and back.
std::vector<std::byte> encode(const std::vector<float>& values, DType dtype, float scale) {
  std::vector<std::byte> bytes(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    } else if (dtype == DType::kBF16) {
      const uint16_t bits = f32_to_bf16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &bits, 2);
    } else {
      const __nv_fp8_e4m3 element(values[i] / scale);
      std::memcpy(bytes.data() + i, &element, 1);
    }
  }
  return bytes;
}

std::vector<float> decode(const std::vector<std::byte>& bytes, DType dtype, float scale) {
  std::vector<float> values(bytes.size() / dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&values[i], bytes.data() + 4 * i, 4);
    } else if (dtype == DType::kBF16) {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      values[i] = bf16_to_f32(bits);
    } else {
      __nv_fp8_e4m3 element;
      std::memcpy(&element, bytes.data() + i, 1);
      values[i] = static_cast<float>(element) * scale;
    }
  }
  return values;
}

// A stored cache against the expected one: f32 to rounding, bf16 to one rounding, FP8 element for element but
// for the rare value whose rounding an ulp of f32 flipped (at most one e4m3 step, 1/8 of the value).
void check_cache(const std::vector<float>& actual, const std::vector<float>& expected, DType dtype) {
  if (dtype != DType::kFP8E4M3) {
    CHECK(relative_error(actual, expected) < (dtype == DType::kF32 ? 1e-4 : 8e-3));
    return;
  }
  size_t differing = 0;
  for (size_t i = 0; i < actual.size(); ++i) differing += actual[i] != expected[i];
  CHECK(differing * 100 <= actual.size());
  CHECK(relative_error(actual, expected) <= 0.13);
}

TEST_CASE("CUDA rms_norm matches the CPU kernel, gathering rows when asked", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(1);
  uint32_t seed = 1;
  for (int width : {64, 1000, 1024, 4096}) {
    for (bool gather : {false, true}) {
      const int64_t rows = 37;
      std::vector<float> x = random_floats(rows * width, seed++, -3, 3);
      std::vector<float> weight = random_floats(width, seed++, 0.5, 1.5);
      std::vector<int32_t> sources;
      for (int64_t r = 0; r < rows; ++r) sources.push_back(static_cast<int32_t>((r * 7) % rows));
      std::vector<float> gathered = x;
      if (gather) {
        for (int64_t r = 0; r < rows; ++r)
          std::copy_n(x.begin() + sources[r] * width, width, gathered.begin() + r * width);
      }
      std::vector<float> expected(x.size());
      rms_norm(pool, gathered.data(), weight.data(), rows, width, 1e-6f, expected.data());
      DeviceBuffer device_x = upload(x), device_weight = upload(weight), device_sources = upload(sources);
      DeviceBuffer out = poisoned(x.size() * sizeof(bf16));
      REQUIRE(cuda::rms_norm(device_x.as<float>(), gather ? device_sources.as<int32_t>() : nullptr, rows, width,
                             device_weight.as<float>(), 1e-6f, out.as<bf16>(), nullptr)
                  .is_ok());
      INFO("width " << width << " gather " << gather);
      CHECK(relative_error(bf16_values_as_float(download<uint16_t>(out, x.size())), expected) < 8e-3);
    }
  }
}

struct HeadCase {
  int heads, kv_heads, head_dim;
};
constexpr HeadCase kHeadCases[] = {{4, 2, 16}, {16, 8, 128}, {8, 1, 64}, {12, 4, 48}, {8, 8, 256}, {32, 4, 32}};

TEST_CASE("CUDA q/k norm, RoPE and KV store match the CPU ops", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(1);
  uint32_t seed = 100;
  for (const HeadCase& shape : kHeadCases) {
    for (const CacheCase& cache_case : kCacheCases) {
      const DType cache_dtype = cache_case.dtype;
      const int64_t tokens = 19, slots_in_cache = 64;
      const int dim = shape.head_dim, q_width = shape.heads * dim, kv_width = shape.kv_heads * dim;
      const int qkv_width = q_width + 2 * kv_width;
      std::vector<float> qkv = random_floats(tokens * qkv_width, seed++, -2, 2);
      std::vector<float> q_norm = random_floats(dim, seed++, 0.5, 1.5), k_norm = random_floats(dim, seed++, 0.5, 1.5);
      std::mt19937 random(seed++);
      std::vector<int32_t> positions(tokens);
      std::vector<int64_t> slots(tokens);
      for (int64_t t = 0; t < tokens; ++t) {
        positions[t] = static_cast<int32_t>(random() % 40000);
        slots[t] = (t * 13 + 5) % slots_in_cache;  // distinct
      }
      // CPU: split q, k, v; norm each head; rotate; store.
      std::vector<float> q(tokens * q_width), k(tokens * kv_width), v(tokens * kv_width);
      for (int64_t t = 0; t < tokens; ++t) {
        const float* row = qkv.data() + t * qkv_width;
        std::copy_n(row, q_width, q.begin() + t * q_width);
        std::copy_n(row + q_width, kv_width, k.begin() + t * kv_width);
        std::copy_n(row + q_width + kv_width, kv_width, v.begin() + t * kv_width);
      }
      rms_norm(pool, q.data(), q_norm.data(), tokens * shape.heads, dim, 1e-6f, q.data());
      rms_norm(pool, k.data(), k_norm.data(), tokens * shape.kv_heads, dim, 1e-6f, k.data());
      RopeAngles angles;
      rope_angles(pool, positions.data(), tokens, dim, 1e6, angles);
      rope_rotate_half(pool, q.data(), angles, shape.heads);
      rope_rotate_half(pool, k.data(), angles, shape.kv_heads);
      // The CPU stores into f32 caches; the expected cache is those values as cache elements.
      const size_t cache_elements = slots_in_cache * kv_width;
      std::vector<float> key_store(cache_elements), value_store(cache_elements);
      KvLayerView view{key_store.data(), value_store.data(), DType::kF32, 16, shape.kv_heads, dim};
      store_kv(pool, view, slots.data(), k.data(), v.data(), tokens);
      const std::vector<std::byte> key_cache = encode(key_store, cache_dtype, cache_case.key_scale);
      const std::vector<std::byte> value_cache = encode(value_store, cache_dtype, cache_case.value_scale);

      std::vector<float> inv_freq(dim / 2);
      for (int i = 0; i < dim / 2; ++i) inv_freq[i] = 1.0f / std::pow(1e6f, static_cast<float>(2 * i) / dim);
      DeviceBuffer device_qkv = upload(qkv), device_q_norm = upload(q_norm), device_k_norm = upload(k_norm);
      DeviceBuffer device_positions = upload(positions), device_slots = upload(slots), device_freq = upload(inv_freq);
      DeviceBuffer query = poisoned(q.size() * sizeof(float));
      // Zeroed as the CPU's caches began: the slots no token names must stay so.
      DeviceBuffer device_keys = filled(key_cache.size(), 0), device_values = filled(value_cache.size(), 0);
      const PagedCache cache{device_keys.as<void>(), device_values.as<void>(), cache_type_of(cache_dtype),
                             cache_case.key_scale, cache_case.value_scale};
      REQUIRE(qk_norm_rope_store(device_qkv.as<float>(), tokens, {shape.heads, shape.kv_heads, dim},
                                 device_q_norm.as<float>(), device_k_norm.as<float>(), 1e-6f,
                                 device_positions.as<int32_t>(), device_freq.as<float>(), device_slots.as<int64_t>(),
                                 query.as<float>(), cache, nullptr)
                  .is_ok());
      INFO("heads " << shape.heads << "/" << shape.kv_heads << " dim " << dim << " cache " << dtype_name(cache_dtype));
      CHECK(relative_error(download<float>(query, q.size()), q) < 1e-4);
      check_cache(decode(download<std::byte>(device_keys, key_cache.size()), cache_dtype, cache_case.key_scale),
                  decode(key_cache, cache_dtype, cache_case.key_scale), cache_dtype);
      // Values are copied, not computed: the same rounding of the same f32, element for element.
      CHECK(relative_error(
                decode(download<std::byte>(device_values, value_cache.size()), cache_dtype, cache_case.value_scale),
                decode(value_cache, cache_dtype, cache_case.value_scale)) == 0.0);
    }
  }
}

// Sequences of a step: the first position and the rows of each.
struct AttentionCase {
  std::vector<int32_t> first_position, num_queries;
};

// One attention problem: random queries and a random paged cache of the case's element type (block tables a
// random permutation of the pool), the CPU kernel's output for them, and device copies, the rows of each sequence
// in tiles of up to `tile_rows`.
struct AttentionProblem {
  int dim = 0, q_width = 0, max_context = 0;
  int64_t rows = 0;
  std::vector<float> queries, expected;
  std::vector<int32_t> context, table_offsets, tables, tile_first_rows, tile_row_counts;
  DeviceBuffer device_queries, device_context, device_offsets, device_tables, device_tile_rows, device_tile_counts,
      device_keys, device_values;
  AttentionShape shape;
  PagedCache cache;

  AttentionProblem(const HeadCase& heads, const CacheCase& cache_case, const AttentionCase& attention_case,
                   int tile_rows, uint32_t& seed) {
    dim = heads.head_dim;
    q_width = heads.heads * dim;
    constexpr int kBlockSize = 16;
    int64_t total_blocks = 0;
    std::vector<int32_t> context_ends;
    for (size_t s = 0; s < attention_case.num_queries.size(); ++s) {
      context_ends.push_back(attention_case.first_position[s] + attention_case.num_queries[s]);
      total_blocks += (context_ends.back() + kBlockSize - 1) / kBlockSize;
      max_context = std::max(max_context, context_ends.back());
    }
    std::vector<int32_t> pool_order(total_blocks);
    for (int32_t i = 0; i < total_blocks; ++i) pool_order[i] = i;
    std::shuffle(pool_order.begin(), pool_order.end(), std::mt19937(seed++));
    const size_t cache_elements = total_blocks * kBlockSize * heads.kv_heads * dim;
    std::vector<float> key_values = random_floats(cache_elements, seed++, -2, 2);
    std::vector<float> value_values = random_floats(cache_elements, seed++, -2, 2);
    // The GPU reads the encoded cache; the CPU reads what those elements mean, in f32.
    const DType dtype = cache_case.dtype;
    const std::vector<std::byte> key_cache = encode(key_values, dtype, cache_case.key_scale);
    const std::vector<std::byte> value_cache = encode(value_values, dtype, cache_case.value_scale);
    std::vector<float> key_meaning = decode(key_cache, dtype, cache_case.key_scale);
    std::vector<float> value_meaning = decode(value_cache, dtype, cache_case.value_scale);
    for (int32_t count : attention_case.num_queries) rows += count;
    queries = random_floats(rows * q_width, seed++, -2, 2);
    expected.resize(queries.size());
    std::vector<AttentionSequence> sequences;
    tables.reserve(total_blocks);  // the sequences' spans point into it: it must not move
    int64_t row = 0, next_block = 0;
    for (size_t s = 0; s < attention_case.num_queries.size(); ++s) {
      const int32_t blocks = (context_ends[s] + kBlockSize - 1) / kBlockSize;
      const auto table_offset = static_cast<int32_t>(tables.size());
      tables.insert(tables.end(), pool_order.begin() + next_block, pool_order.begin() + next_block + blocks);
      next_block += blocks;
      const int32_t count = attention_case.num_queries[s];
      sequences.push_back({queries.data() + row * q_width, expected.data() + row * q_width, count,
                           attention_case.first_position[s],
                           std::span<const int32_t>(tables).subspan(table_offset, blocks)});
      for (int32_t i = 0; i < count; ++i) {
        context.push_back(attention_case.first_position[s] + i + 1);
        table_offsets.push_back(table_offset);
      }
      for (int32_t first = 0; first < count; first += tile_rows) {
        tile_first_rows.push_back(static_cast<int32_t>(row) + first);
        tile_row_counts.push_back(std::min(tile_rows, count - first));
      }
      row += count;
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
    ThreadPool pool(1);
    KvLayerView view{key_meaning.data(), value_meaning.data(), DType::kF32, kBlockSize, heads.kv_heads, dim};
    paged_attention(pool, view, sequences, heads.heads, scale);
    device_queries = upload(queries), device_context = upload(context);
    device_offsets = upload(table_offsets), device_tables = upload(tables);
    device_tile_rows = upload(tile_first_rows), device_tile_counts = upload(tile_row_counts);
    device_keys = upload(key_cache), device_values = upload(value_cache);
    shape = {{heads.heads, heads.kv_heads, dim}, kBlockSize, scale};
    cache = {device_keys.as<void>(), device_values.as<void>(), cache_type_of(dtype), cache_case.key_scale,
             cache_case.value_scale};
  }

  int64_t tiles() const { return static_cast<int64_t>(tile_first_rows.size()); }
  int max_tile_rows() const { return *std::max_element(tile_row_counts.begin(), tile_row_counts.end()); }
  AttentionRows attention_rows(const int32_t* split_tokens) const {
    return {device_queries.as<float>(),
            device_context.as<int32_t>(),
            device_offsets.as<int32_t>(),
            device_tables.as<int32_t>(),
            device_tile_rows.as<int32_t>(),
            device_tile_counts.as<int32_t>(),
            split_tokens,
            rows,
            tiles(),
            max_tile_rows()};
  }

  // Row by row: a row whose outputs are small (a long, flat context) must not hide behind a large one.
  void check(const DeviceBuffer& out, double tolerance) const {
    const std::vector<float> actual = bf16_values_as_float(download<uint16_t>(out, queries.size()));
    for (int64_t r = 0; r < rows; ++r) {
      const auto row_of = [&](const std::vector<float>& values) {
        return std::vector<float>(values.begin() + r * q_width, values.begin() + (r + 1) * q_width);
      };
      INFO("row " << r);
      CHECK(relative_error(row_of(actual), row_of(expected)) < tolerance);
    }
  }
};

TEST_CASE("CUDA paged attention matches the CPU kernel for prompts, decode rows and split long contexts",
          "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  // A decode row, prompt chunks after a cached prefix, and contexts long enough to split. The last two straddle
  // split boundaries with prompt tiles: some rows of a tile have no position in a split its other rows reach
  // (fully masked queries in a split that is not empty).
  const AttentionCase cases[] = {{{0}, {1}},    {{40, 0, 7}, {1, 33, 5}}, {{3000, 17, 0}, {1, 16, 1}},
                                 {{5000}, {3}}, {{3000, 1000}, {1, 16}},  {{0}, {150}}};
  uint32_t seed = 1000;
  for (const HeadCase& heads : kHeadCases) {
    for (const CacheCase& cache_case : kCacheCases) {
      for (const AttentionCase& attention_case : cases) {
        // Multiprocessors 1: splits only past kMaxSplitTokens; 132: an H200's count. Tiles of one row, or as many
        // as a prompt's tile takes.
        const int full_tile = rows_per_tile(heads.heads / heads.kv_heads);
        for (auto [multiprocessors, tile_rows] : {std::pair{1, full_tile}, {132, full_tile}, {132, 1}}) {
          const AttentionProblem problem(heads, cache_case, attention_case, tile_rows, seed);
          const AttentionSplits splits =
              attention_splits(problem.tiles(), heads.kv_heads, problem.max_context, multiprocessors);
          DeviceBuffer device_split = upload(std::vector<int32_t>{splits.split_tokens});
          DeviceBuffer workspace = poisoned(attention_workspace_bytes(problem.tiles() * problem.max_tile_rows(),
                                                                      heads.heads, heads.head_dim, splits.splits));
          DeviceBuffer out = poisoned(problem.queries.size() * sizeof(bf16));
          REQUIRE(paged_attention(problem.attention_rows(device_split.as<int32_t>()), problem.shape, problem.cache,
                                  splits.splits, workspace.as<void>(), out.as<bf16>(), nullptr)
                      .is_ok());
          INFO("heads " << heads.heads << "/" << heads.kv_heads << " dim " << heads.head_dim << " cache "
                        << dtype_name(cache_case.dtype) << " rows " << problem.rows << " in tiles of " << tile_rows
                        << " max context " << problem.max_context << " splits " << splits.splits << " of "
                        << splits.split_tokens);
          CHECK(splits.split_tokens <= kMaxSplitTokens);
          CHECK(int64_t{splits.splits} * splits.split_tokens >= problem.max_context);
          problem.check(out, 1e-2);
        }
      }
    }
  }
}

TEST_CASE("CUDA tensor-core prompt attention matches the CPU kernel for prompt chunks of any length", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  // Chunks shorter than a tile, of several tiles, after cached prefixes of any length (so a tile's first key step
  // starts mid-block and its last rows see keys its first rows do not), a decode-like single row, and a long one.
  const AttentionCase cases[] = {{{0}, {5}},      {{0}, {64}},           {{40, 0, 7}, {1, 150, 65}},
                                 {{1000}, {200}}, {{3, 5000}, {130, 1}}, {{0}, {1100}}};
  uint32_t seed = 2000;
  for (const HeadCase& heads : kHeadCases) {
    if (!prompt_attention_supports({heads.heads, heads.kv_heads, heads.head_dim})) continue;
    for (const CacheCase& cache_case : kCacheCases) {
      for (const AttentionCase& attention_case : cases) {
        const AttentionProblem problem(heads, cache_case, attention_case, kPromptTileRows, seed);
        DeviceBuffer out = poisoned(problem.queries.size() * sizeof(bf16));
        REQUIRE(prompt_attention(problem.attention_rows(nullptr), problem.shape, problem.cache, out.as<bf16>(), nullptr)
                    .is_ok());
        INFO("heads " << heads.heads << "/" << heads.kv_heads << " dim " << heads.head_dim << " cache "
                      << dtype_name(cache_case.dtype) << " rows " << problem.rows << " max context "
                      << problem.max_context);
        // Queries, keys and weights enter the products as bf16 (as in FlashAttention): a bf16 model's error.
        problem.check(out, 2e-2);
      }
    }
  }
  const AttentionProblem problem(kHeadCases[1], kCacheCases[1], {{0}, {10}}, kPromptTileRows + 1, seed);
  DeviceBuffer out = poisoned(problem.queries.size() * sizeof(bf16));
  AttentionRows too_long = problem.attention_rows(nullptr);
  too_long.max_tile_rows = kPromptTileRows + 1;
  CHECK(prompt_attention(too_long, problem.shape, problem.cache, out.as<bf16>(), nullptr).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("CUDA SwiGLU, embeddings and the adaptor's bias and activation match the CPU", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(1);
  const int64_t rows = 23;
  const int width = 3072;
  std::vector<float> gate_up = random_floats(rows * 2 * width, 7, -6, 6);
  std::vector<float> gate(rows * width), up(rows * width), expected(rows * width);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(gate_up.begin() + r * 2 * width, width, gate.begin() + r * width);
    std::copy_n(gate_up.begin() + r * 2 * width + width, width, up.begin() + r * width);
  }
  silu_mul(pool, gate.data(), up.data(), rows * width, expected.data());
  DeviceBuffer device_gate_up = upload(gate_up), out = poisoned(expected.size() * sizeof(bf16));
  REQUIRE(silu_mul(device_gate_up.as<float>(), rows, width, out.as<bf16>(), nullptr).is_ok());
  CHECK(relative_error(bf16_values_as_float(download<uint16_t>(out, expected.size())), expected) < 8e-3);

  // Embeddings: vocabulary rows (bf16 table) and adaptor rows plus bias.
  const int hidden = 96, vocab = 50;
  std::vector<uint16_t> table = testing::to_bf16(random_floats(vocab * hidden, 8));
  std::vector<float> adaptor = random_floats(3 * hidden, 9), bias = random_floats(hidden, 10);
  std::vector<int32_t> tokens = {4, 49, 0, 7, 7, 12}, entity_rows = {-1, -1, 2, -1, 0, -1};
  std::vector<float> embedded(tokens.size() * hidden);
  for (size_t r = 0; r < tokens.size(); ++r) {
    for (int i = 0; i < hidden; ++i) {
      embedded[r * hidden + i] = entity_rows[r] >= 0 ? adaptor[entity_rows[r] * hidden + i] + bias[i]
                                                     : bf16_to_f32(table[tokens[r] * hidden + i]);
    }
  }
  DeviceBuffer device_tokens = upload(tokens), device_entities = upload(entity_rows), device_table = upload(table);
  DeviceBuffer device_adaptor = upload(adaptor), device_bias = upload(bias);
  DeviceBuffer embedded_out = poisoned(embedded.size() * sizeof(float));
  REQUIRE(embed_tokens(device_tokens.as<int32_t>(), device_entities.as<int32_t>(), static_cast<int64_t>(tokens.size()),
                       device_table.as<bf16>(), device_adaptor.as<float>(), device_bias.as<float>(), hidden,
                       embedded_out.as<float>(), nullptr)
              .is_ok());
  CHECK(relative_error(download<float>(embedded_out, embedded.size()), embedded) == 0.0);

  // The adaptor's activations, against the formulas of Hugging Face's ACT2FN.
  const std::vector<float> x = random_floats(rows * 40, 11, -4, 4), adaptor_bias = random_floats(40, 12);
  for (Activation activation : {Activation::kGelu, Activation::kGeluTanh, Activation::kSilu, Activation::kRelu}) {
    std::vector<float> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = static_cast<double>(x[i]) + adaptor_bias[i % 40];
      switch (activation) {
        case Activation::kGelu: want[i] = static_cast<float>(0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))); break;
        case Activation::kGeluTanh:
          want[i] = static_cast<float>(0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
          break;
        case Activation::kSilu: want[i] = static_cast<float>(v / (1 + std::exp(-v))); break;
        case Activation::kRelu: want[i] = static_cast<float>(v > 0 ? v : 0); break;
      }
    }
    DeviceBuffer device_x = upload(x), device_adaptor_bias = upload(adaptor_bias);
    REQUIRE(
        bias_activation(device_x.as<float>(), device_adaptor_bias.as<float>(), rows, 40, activation, nullptr).is_ok());
    INFO("activation " << static_cast<int>(activation));
    CHECK(relative_error(download<float>(device_x, x.size()), want) < 1e-5);
  }
}

}  // namespace
}  // namespace recgpt::cuda
