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

// The kernels for tiled weights need AVX512_BF16 (and a CPU without AMX, which the tests can pretend).
bool tiled_kernels_available() {
  const CpuFeatures detected = detected_cpu_features();
  if (detected.avx512_bf16) return true;
  WARN("SKIPPED: this CPU has no AVX512_BF16, which the tiled-weight kernels need");
  return false;
}

constexpr CpuFeatures kBf16WithoutAmx{true, true, true, false};

// The first 64-byte boundary in `storage` (which holds 32 spare elements): row-major rows of whole cache lines
// then start on one, as the weights of our model files do, so that the kernels take the same steps in both
// layouts (a misaligned row-major row is peeled, which sums in another order).
uint16_t* cache_line_in(std::vector<uint16_t>& storage, int64_t skip = 0) {
  return reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(storage.data() + skip) + 63) & ~uintptr_t{63});
}

// `n` x `k` bf16 weights, row-major and tiled, both on cache lines; the tiled copy sits between NaN guards so
// that a kernel reading outside it shows.
struct TwoLayouts {
  std::vector<uint16_t> row_major_storage, tiled_storage;
  uint16_t* row_major = nullptr;
  uint16_t* tiled = nullptr;

  TwoLayouts(int64_t n, int64_t k, uint32_t seed) {
    const std::vector<uint16_t> values = testing::to_bf16(random_floats(n * k, seed));
    row_major_storage.resize(n * k + 32);
    row_major = cache_line_in(row_major_storage);
    std::copy(values.begin(), values.end(), row_major);
    constexpr int64_t kGuard = 256;  // elements either side, 512 bytes
    tiled_storage.assign(n * k + 2 * kGuard + 32, f32_to_bf16(std::nanf("")));
    tiled = cache_line_in(tiled_storage, kGuard);
    pack_tiles(row_major, k, 0, n / kWeightTileRows, tiled);
  }
};

TEST_CASE("tiled weights multiply exactly as row-major ones on both bf16 paths", "[cpu][matmul][tiled]") {
  if (!tiled_kernels_available()) return;
  ScopedCpuFeatures scoped(kBf16WithoutAmx);
  ThreadPool pool(2);
  for (int64_t n : {8, 40, 1024}) {
    for (int64_t k : {32, 96, 1024}) {
      TwoLayouts weights(n, k, static_cast<uint32_t>(n * 31 + k));
      REQUIRE(tiled_layout_supported(DType::kBF16, n, k));
      const WeightMatrix row_major{DType::kBF16, weights.row_major, n, k};
      const WeightMatrix tiled{DType::kBF16, weights.tiled, n, k, WeightLayout::kTiled};
      // 1-15 rows: the dot form; from 16: the panel kernel (kBf16PanelMinRows).
      for (int64_t m : {1, 2, 3, 4, 8, 15, 16, 17, 33, 64, 65}) {
        INFO("m=" << m << " n=" << n << " k=" << k);
        std::vector<float> x = random_floats(m * k, static_cast<uint32_t>(m));
        std::vector<float> expected(m * n), actual(m * n + 16, 12345.0f);
        matmul(pool, x.data(), m, row_major, expected.data());
        matmul(pool, x.data(), m, tiled, actual.data());
        // The same products summed in the same order: equal bit for bit.
        REQUIRE(std::memcmp(expected.data(), actual.data(), expected.size() * sizeof(float)) == 0);
        for (int g = 0; g < 16; ++g) REQUIRE(actual[m * n + g] == 12345.0f);
      }
    }
  }
}

TEST_CASE("one call mixes tiled and row-major targets", "[cpu][matmul][tiled]") {
  if (!tiled_kernels_available()) return;
  ScopedCpuFeatures scoped(kBf16WithoutAmx);
  ThreadPool pool(2);
  const int64_t k = 64;
  TwoLayouts a(48, k, 1), b(24, k, 2), c(20 + 4, k, 3);  // c: 20 rows, row-major only (not whole tiles)
  for (int64_t m : {1, 5, 40}) {
    INFO("m=" << m);
    std::vector<float> x = random_floats(m * k, 9);
    std::vector<float> ya(m * 48), yb(m * 24), yc(m * 20), expected_a(m * 48), expected_b(m * 24), expected_c(m * 20);
    const MatmulTarget targets[] = {{{DType::kBF16, a.tiled, 48, k, WeightLayout::kTiled}, ya.data()},
                                    {{DType::kBF16, c.row_major, 20, k}, yc.data()},
                                    {{DType::kBF16, b.tiled, 24, k, WeightLayout::kTiled}, yb.data()}};
    matmul_shared_input(pool, x.data(), m, targets);
    matmul(pool, x.data(), m, {DType::kBF16, a.row_major, 48, k}, expected_a.data());
    matmul(pool, x.data(), m, {DType::kBF16, b.row_major, 24, k}, expected_b.data());
    matmul(pool, x.data(), m, {DType::kBF16, c.row_major, 20, k}, expected_c.data());
    REQUIRE(ya == expected_a);
    REQUIRE(yb == expected_b);
    REQUIRE(yc == expected_c);
  }
}

TEST_CASE("every row of a tiled matrix reads back as stored", "[cpu][tiled]") {
  const int64_t n = 24, k = 96;
  TwoLayouts weights(n, k, 5);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    tiled_row_as_f32(weights.tiled, k, r, row.data());
    for (int64_t i = 0; i < k; ++i) REQUIRE(row[i] == bf16_to_f32(weights.row_major[r * k + i]));
  }
}

TEST_CASE("the tiled layout is offered only for shapes and CPUs its kernels take", "[cpu][tiled]") {
  {
    ScopedCpuFeatures scoped(kBf16WithoutAmx);
    CHECK(tiled_layout_supported(DType::kBF16, 1024, 3072));
    CHECK_FALSE(tiled_layout_supported(DType::kF32, 1024, 3072));   // f32 prefill is OpenBLAS's, row-major
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1020, 3072));  // rows not whole tiles
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1024, 3070));  // a row not whole 64-byte chunks
  }
  if (detected_cpu_features().amx_bf16) {                           // the testing hook can only take features away
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1024, 3072));  // the AMX kernel reads its own layout
  }
  {
    ScopedCpuFeatures no_bf16({true, true, false, false});
    CHECK_FALSE(tiled_layout_supported(DType::kBF16, 1024, 3072));
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
  std::vector<float> all, logits;
  Batch prefill;
  prefill.sequences.push_back({std::span(tokens).first(20), {}, 0, blocks, LogitsWanted::kAll});
  REQUIRE((*backend)->forward(prefill, *cache, logits).is_ok());
  all = logits;
  for (int32_t position = 20; position < 24; ++position) {
    Batch step;
    step.sequences.push_back({std::span(tokens).subspan(position, 1), {}, position, blocks, LogitsWanted::kLast});
    REQUIRE((*backend)->forward(step, *cache, logits).is_ok());
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST_CASE("the CPU backend gives the same logits with repacked weights as in place", "[cpu][tiled]") {
  if (!tiled_kernels_available()) return;
  ScopedCpuFeatures scoped(kBf16WithoutAmx);
  std::unique_ptr<ModelFiles> model = tiny_preset(DType::kBF16);
  const std::vector<float> in_place = prefill_then_decode(*model, false);
  const std::vector<float> repacked = prefill_then_decode(*model, true);
  REQUIRE(in_place.size() == repacked.size());
  REQUIRE(std::memcmp(in_place.data(), repacked.data(), in_place.size() * sizeof(float)) == 0);
}

TEST_CASE("f32 weights are not repacked", "[cpu][tiled]") {
  std::unique_ptr<ModelFiles> model = tiny_preset(DType::kF32);
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
