// Weights repacked into WeightLayout::kTiled multiply exactly as the row-major originals, and the CPU backend
// gives the same logits with them as reading the files in place.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/tiled_weights.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"
#include "tests/unit/engine/cpu_kernel_test_support.h"

namespace recgpt {
namespace {

using testing::random_floats;
using testing::ScopedCpuFeatures;

// Everything the CPU has but AMX (which the testing hook can take away, not add).
constexpr CpuFeatures kWithoutAmx{true, true, true, false};

// The first 64-byte boundary in `storage` at or after `skip` bytes (storage holds 64 spare bytes): row-major
// rows of whole cache lines then start on one, as the weights of our model files do, so that the kernels take
// the same steps in both layouts (a misaligned row-major row is peeled, which sums in another order).
std::byte* cache_line_in(std::vector<std::byte>& storage, size_t skip = 0) {
  return reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(storage.data() + skip) + 63) & ~uintptr_t{63});
}

// `n` x `k` weights of `dtype`, row-major and tiled, both on cache lines; the tiled copy sits between NaN guards
// (all bits set: NaN in f32 and bf16) so that a kernel reading outside it shows.
struct TwoLayouts {
  DType dtype;
  int64_t n, k;
  std::vector<std::byte> row_major_storage, tiled_storage;
  std::byte* row_major_data = nullptr;
  std::byte* tiled_data = nullptr;

  TwoLayouts(DType dtype, int64_t n, int64_t k, uint32_t seed) : dtype(dtype), n(n), k(k) {
    const std::vector<float> values = random_floats(n * k, seed);
    const std::vector<uint16_t> bf16 = testing::to_bf16(values);
    const size_t bytes = n * k * dtype_size(dtype);
    row_major_storage.resize(bytes + 64);
    row_major_data = cache_line_in(row_major_storage);
    std::memcpy(row_major_data, dtype == DType::kF32 ? static_cast<const void*>(values.data()) : bf16.data(), bytes);
    constexpr size_t kGuardBytes = 512;  // either side
    tiled_storage.assign(bytes + 2 * kGuardBytes + 64, std::byte{0xff});
    tiled_data = cache_line_in(tiled_storage, kGuardBytes);
    pack_tiles(row_major_data, dtype_size(dtype), k, 0, n / kWeightTileRows, tiled_data);
  }

  WeightMatrix row_major(int64_t rows = 0) const { return {dtype, row_major_data, rows > 0 ? rows : n, k}; }
  WeightMatrix tiled() const { return {dtype, tiled_data, n, k, WeightLayout::kTiled}; }
};

// Where the CPU supports tiled weights of `dtype`, with the features the kernels for them need; false (and a
// visible skip) where it does not.
bool tiled_kernels_available(DType dtype) {
  const CpuFeatures detected = detected_cpu_features();
  if (dtype == DType::kBF16 ? detected.avx512_bf16 : detected.avx512) return true;
  WARN("SKIPPED: this CPU lacks the instructions of the tiled-weight kernels for " << dtype_name(dtype));
  return false;
}

TEST_CASE("tiled weights multiply as row-major ones on every path", "[cpu][matmul][tiled]") {
  ThreadPool pool(2);
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    if (!tiled_kernels_available(dtype)) continue;
    ScopedCpuFeatures scoped(kWithoutAmx);
    const int64_t chunk = kWeightTileChunkBytes / static_cast<int64_t>(dtype_size(dtype));
    for (int64_t n : {8, 40, 1024}) {
      for (int64_t k : {chunk, 3 * chunk, int64_t{1024}}) {
        TwoLayouts weights(dtype, n, k, static_cast<uint32_t>(n * 31 + k));
        REQUIRE(tiled_layout_supported(dtype, n, k));
        // bf16: 1-15 rows the dot form, from 16 the panel kernel; f32: 1-3 the dot form, from 4 the panel kernel,
        // where row-major weights go to OpenBLAS above 64.
        for (int64_t m : {1, 2, 3, 4, 8, 15, 16, 17, 33, 64, 65, 100}) {
          INFO(dtype_name(dtype) << " m=" << m << " n=" << n << " k=" << k);
          std::vector<float> x = random_floats(m * k, static_cast<uint32_t>(m));
          std::vector<float> expected(m * n), actual(m * n + 16, 12345.0f);
          matmul(pool, x.data(), m, weights.row_major(), expected.data());
          matmul(pool, x.data(), m, weights.tiled(), actual.data());
          if (dtype == DType::kF32 && m > kF32PanelMaxRows) {
            // OpenBLAS sums in another order: f32 rounding, ~1e-7 per product of magnitude <= 1 (a misread
            // weight is off by O(1)).
            for (int64_t i = 0; i < m * n; ++i) REQUIRE(std::fabs(actual[i] - expected[i]) <= 1e-6f * k);
          } else {
            // The same kernel summing the same products in the same order: equal bit for bit.
            REQUIRE(std::memcmp(expected.data(), actual.data(), expected.size() * sizeof(float)) == 0);
          }
          for (int g = 0; g < 16; ++g) REQUIRE(actual[m * n + g] == 12345.0f);
        }
      }
    }
  }
}

TEST_CASE("one call mixes tiled and row-major targets", "[cpu][matmul][tiled]") {
  if (!tiled_kernels_available(DType::kBF16)) return;
  ScopedCpuFeatures scoped(kWithoutAmx);
  ThreadPool pool(2);
  const int64_t k = 64;
  TwoLayouts a(DType::kBF16, 48, k, 1), b(DType::kBF16, 24, k, 2), c(DType::kBF16, 24, k, 3);
  for (int64_t m : {1, 5, 40}) {
    INFO("m=" << m);
    std::vector<float> x = random_floats(m * k, 9);
    std::vector<float> ya(m * 48), yb(m * 24), yc(m * 20), expected_a(m * 48), expected_b(m * 24), expected_c(m * 20);
    // c: its first 20 rows, row-major only (not whole tiles).
    const MatmulTarget targets[] = {{a.tiled(), ya.data()}, {c.row_major(20), yc.data()}, {b.tiled(), yb.data()}};
    matmul_shared_input(pool, x.data(), m, targets);
    matmul(pool, x.data(), m, a.row_major(), expected_a.data());
    matmul(pool, x.data(), m, b.row_major(), expected_b.data());
    matmul(pool, x.data(), m, c.row_major(20), expected_c.data());
    REQUIRE(ya == expected_a);
    REQUIRE(yb == expected_b);
    REQUIRE(yc == expected_c);
  }
}

TEST_CASE("every row of a tiled matrix reads back as stored", "[cpu][tiled]") {
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    TwoLayouts weights(dtype, 24, 96, 5);
    std::vector<float> row(96), expected(96);
    for (int64_t r = 0; r < 24; ++r) {
      INFO(dtype_name(dtype) << " row " << r);
      tiled_row_as_f32(weights.tiled(), r, row.data());
      for (int64_t i = 0; i < 96; ++i) {
        const std::byte* element = weights.row_major_data + (r * 96 + i) * dtype_size(dtype);
        uint16_t half;
        std::memcpy(&half, element, sizeof(half));
        float value;
        std::memcpy(&value, element, sizeof(value));
        REQUIRE(row[i] == (dtype == DType::kF32 ? value : bf16_to_f32(half)));
      }
    }
  }
}

TEST_CASE("the tiled layout is offered only for shapes and CPUs its kernels take", "[cpu][tiled]") {
  const CpuFeatures detected = detected_cpu_features();
  {
    ScopedCpuFeatures scoped(kWithoutAmx);
    CHECK(tiled_layout_supported(DType::kBF16, 1024, 3072) == detected.avx512_bf16);
    CHECK(tiled_layout_supported(DType::kF32, 1024, 3072) == detected.avx512);
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1020, 3072));  // rows not whole tiles
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1024, 3070));  // a row not whole 64-byte chunks
    CHECK_FALSE(tiled_layout_supported(DType::kF32, 1024, 3064));
    CHECK_FALSE(tiled_layout_supported(DType::kF16, 1024, 3072));
  }
  if (detected.amx_bf16) {                                          // the testing hook can only take features away
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1024, 3072));  // the AMX kernel reads its own layout
  }
  {
    ScopedCpuFeatures no_avx512({true, false, false, false});
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1024, 3072));
    CHECK_FALSE(tiled_layout_supported(DType::kF32, 1024, 3072));
  }
}

// The "tiny" preset (every projection packable; the LM head is tied to the embedding table) in `dtype`.
std::unique_ptr<ModelFiles> tiny_preset(DType dtype) {
  auto dir = std::filesystem::temp_directory_path() /
             ("recgpt_tiled_" + std::to_string(::getpid()) + "_" + std::string(dtype_name(dtype)));
  REQUIRE(make_model({"tiny", 3, dtype, dir.string()}).is_ok());
  auto opened = ModelFiles::open(dir.string());
  REQUIRE(opened.is_ok());
  std::filesystem::remove_all(dir);  // the mapping stays valid after unlink
  return std::move(opened).value();
}

// Logits of a 20-token prefill and 4 decode steps after it, every row.
std::vector<float> prefill_then_decode(const ModelFiles& model, bool repack) {
  const ModelConfig& config = model.config();
  auto cache =
      KvCache::create({config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 16, DType::kF32, 4});
  REQUIRE(cache.is_ok());
  auto backend = create_backend("cpu", model, {2, repack});
  REQUIRE(backend.is_ok());
  REQUIRE((*backend)->decode_weight_memory().empty() == !repack);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 24; ++i) tokens.push_back((i * 37 + 11) % config.vocab_size);
  const std::vector<int32_t> blocks = {2, 0};
  std::vector<float> all;
  HostLogits logits;
  Batch prefill;
  prefill.sequences.push_back({std::span(tokens).first(20), {}, 0, blocks, LogitsWanted::kAll});
  REQUIRE((*backend)->forward(prefill, *cache, logits).is_ok());
  all.assign(logits.begin(), logits.end());
  for (int32_t position = 20; position < 24; ++position) {
    Batch step;
    step.sequences.push_back({std::span(tokens).subspan(position, 1), {}, position, blocks, LogitsWanted::kLast});
    REQUIRE((*backend)->forward(step, *cache, logits).is_ok());
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST_CASE("the CPU backend gives the same logits with repacked weights as in place", "[cpu][tiled]") {
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    if (!tiled_kernels_available(dtype)) continue;
    INFO(dtype_name(dtype));
    ScopedCpuFeatures scoped(kWithoutAmx);
    std::unique_ptr<ModelFiles> model = tiny_preset(dtype);
    const std::vector<float> in_place = prefill_then_decode(*model, false);
    const std::vector<float> repacked = prefill_then_decode(*model, true);
    REQUIRE(in_place.size() == repacked.size());
    // The tiny model's matmuls have at most 20 rows: the same kernels either way, so the same bits.
    REQUIRE(std::memcmp(in_place.data(), repacked.data(), in_place.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("a CPU without the tiled kernels reads the weights in place", "[cpu][tiled]") {
  ScopedCpuFeatures avx2_only({true, false, false, false});
  std::unique_ptr<ModelFiles> model = tiny_preset(DType::kBF16);
  auto backend = create_backend("cpu", *model, {1, true});
  REQUIRE(backend.is_ok());
  REQUIRE((*backend)->decode_weight_memory().empty());
}

TEST_CASE("releasing a tensor's resident pages keeps its contents", "[cpu][tiled]") {
  std::unique_ptr<ModelFiles> model = tiny_preset(DType::kBF16);
  const TensorView& view = model->weights().layers.at(0).gate_proj;
  const auto* bytes = static_cast<const std::byte*>(view.data);
  const std::vector<std::byte> before(bytes, bytes + view.num_bytes());
  model->release_resident_pages(std::span(bytes, view.num_bytes()));
  REQUIRE(std::memcmp(before.data(), view.data, before.size()) == 0);
  // A buffer the model does not map is left alone (MADV_DONTNEED would zero anonymous memory).
  std::vector<std::byte> own(before);
  model->release_resident_pages(own);
  REQUIRE(own == before);
}

}  // namespace
}  // namespace recgpt
