#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/cpu/matmul.h"
#include "tests/unit/engine/cpu_kernel_test_support.h"

namespace recgpt {
namespace {

using testing::kernel_paths;
using testing::random_floats;
using testing::ScopedCpuFeatures;

constexpr float kGuard = 12345.0f;

// Checks matmul against a double-precision reference on the weights as stored (bf16 values exactly).
// Tolerance per output: the bf16-dot path rounds x to bf16 (relative error <= 2^-9 per product), so
// |error| <= 2^-9 · Σ|x·w| plus f32 accumulation (~k · 2^-24 · Σ|x·w|); paths that keep x in f32 only have the
// accumulation error. We allow 2^-8 and 1e-5 of Σ|x·w| respectively.
// The weights start `offset_bytes` past a 64-byte boundary (a multiple of the element size), with NaN around
// them so that a kernel reading outside the matrix shows.
void check_matmul(ThreadPool& pool, DType dtype, int64_t m, int64_t n, int64_t k, bool x_rounded_to_bf16,
                  int64_t offset_bytes = 0) {
  std::vector<float> x = random_floats(m * k, 11 + m);
  std::vector<float> w_values = random_floats(n * k, 13 + n);
  std::vector<uint16_t> w_bf16 = testing::to_bf16(w_values);
  if (dtype == DType::kBF16) {
    for (int64_t i = 0; i < n * k; ++i) w_values[i] = bf16_to_f32(w_bf16[i]);
  }
  const size_t w_bytes = n * k * dtype_size(dtype);
  std::vector<float> storage((w_bytes + offset_bytes + 256) / sizeof(float) + 16, std::nanf(""));
  auto* base = reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(storage.data()) + 127) & ~uintptr_t{63});
  std::memcpy(base + offset_bytes, dtype == DType::kBF16 ? static_cast<const void*>(w_bf16.data()) : w_values.data(),
              w_bytes);
  WeightMatrix w{dtype, base + offset_bytes, n, k};
  std::vector<float> y(m * n + 16, kGuard);
  matmul(pool, x.data(), m, w, y.data());

  const double relative = x_rounded_to_bf16 && dtype == DType::kBF16 ? 1.0 / 256 : 1e-5;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double expected = 0, magnitude = 0;
      for (int64_t p = 0; p < k; ++p) {
        expected += double{x[i * k + p]} * w_values[j * k + p];
        magnitude += std::fabs(double{x[i * k + p]} * w_values[j * k + p]);
      }
      INFO("m=" << m << " n=" << n << " k=" << k << " at (" << i << ", " << j << ")");
      REQUIRE(std::fabs(y[i * n + j] - expected) <= relative * magnitude + 1e-6);
    }
  }
  for (int g = 0; g < 16; ++g) REQUIRE(y[m * n + g] == kGuard);  // nothing written past y
}

TEST_CASE("matmul matches a double reference on odd shapes, every dtype and path", "[cpu][matmul]") {
  ThreadPool pool(2);
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      INFO("path " << path.name << ", weights " << dtype_name(dtype));
      for (int64_t m : {1, 2, 3, 4, 8, 13, 16, 17, 33, 64, 65}) {
        for (int64_t n : {1, 7, 9, 37}) {
          for (int64_t k : {1, 15, 31, 33, 67, 130}) check_matmul(pool, dtype, m, n, k, path.features.avx512_bf16);
        }
      }
    }
  }
}

TEST_CASE("matmul matches a double reference on tile-aligned shapes (the AMX path)", "[cpu][matmul]") {
  ThreadPool pool(2);
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    INFO("path " << path.name);
    for (int64_t m : {1, 2, 15, 16, 17, 33, 64}) {
      for (int64_t n : {32, 96}) {
        for (int64_t k : {32, 64, 1024}) check_matmul(pool, DType::kBF16, m, n, k, path.features.avx512_bf16);
      }
    }
  }
}

TEST_CASE("matmul reads weights at any alignment", "[cpu][matmul]") {
  // Rows of whole cache lines share their misalignment: the kernels peel it off (isa_kernels.h, strip_peel).
  ThreadPool pool(2);
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (int64_t offset = 0; offset < 64; offset += static_cast<int64_t>(dtype_size(dtype))) {
        INFO("path " << path.name << ", weights " << dtype_name(dtype) << ", offset " << offset);
        for (int64_t m : {1, 2, 3, 5}) {
          check_matmul(pool, dtype, m, 9, 64, path.features.avx512_bf16, offset);
          check_matmul(pool, dtype, m, 17, 33, path.features.avx512_bf16, offset);
        }
      }
    }
  }
}

TEST_CASE("matmul handles model-sized blocks split over threads", "[cpu][matmul]") {
  ThreadPool pool(2);
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      INFO("path " << path.name << ", weights " << dtype_name(dtype));
      for (int64_t m : {1, 5, 20, 70}) {
        check_matmul(pool, dtype, m, 523, 1024, path.features.avx512_bf16);
        check_matmul(pool, dtype, m, 1024, 256, path.features.avx512_bf16);
      }
    }
  }
}

TEST_CASE("matmul with k = 0 writes zeros and with m = 0 writes nothing", "[cpu][matmul]") {
  ThreadPool pool(1);
  std::vector<float> y(6, kGuard);
  float x[1] = {1.0f};
  matmul(pool, x, 2, WeightMatrix{DType::kF32, x, 3, 0}, y.data());
  for (float value : y) REQUIRE(value == 0.0f);
  std::vector<float> untouched(4, kGuard);
  matmul(pool, x, 0, WeightMatrix{DType::kBF16, x, 3, 4}, untouched.data());
  for (float value : untouched) REQUIRE(value == kGuard);
}

}  // namespace
}  // namespace recgpt
