#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/ops.h"
#include "tests/unit/engine/cpu_kernel_test_support.h"

namespace recgpt {
namespace {

using testing::kernel_paths;
using testing::random_floats;
using testing::ScopedCpuFeatures;

// f32 kernels against double references: a handful of f32 roundings per element, so 1e-5 relative suffices
// (exp is a polynomial good to ~2 ulp, still far below that).
TEST_CASE("rms_norm matches HF Qwen3RMSNorm in double, also in place", "[cpu][ops]") {
  ThreadPool pool(2);
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (int64_t rows : {1, 3, 70}) {
      for (int64_t dim : {1, 7, 16, 1031}) {
        INFO(path.name << " rows " << rows << " dim " << dim);
        std::vector<float> x = random_floats(rows * dim, 1, -3.0f, 3.0f);
        std::vector<float> weight = random_floats(dim, 2, 0.5f, 1.5f);
        std::vector<float> out(rows * dim), in_place = x;
        rms_norm(pool, x.data(), weight.data(), rows, dim, 1e-6f, out.data());
        rms_norm(pool, in_place.data(), weight.data(), rows, dim, 1e-6f, in_place.data());
        for (int64_t r = 0; r < rows; ++r) {
          double squares = 0;
          for (int64_t i = 0; i < dim; ++i) squares += double{x[r * dim + i]} * x[r * dim + i];
          double inverse = 1.0 / std::sqrt(squares / dim + 1e-6);
          for (int64_t i = 0; i < dim; ++i) {
            double expected = x[r * dim + i] * inverse * weight[i];
            REQUIRE(std::fabs(out[r * dim + i] - expected) <= 1e-5 * std::fabs(expected) + 1e-6);
            REQUIRE(in_place[r * dim + i] == out[r * dim + i]);
          }
        }
      }
    }
  }
}

TEST_CASE("rope_rotate_half rotates first half against second half with HF's f32 angles", "[cpu][ops]") {
  ThreadPool pool(2);
  const int num_heads = 3, head_dim = 64, half = head_dim / 2;
  const double theta = 1000000.0;
  std::vector<int32_t> positions = {0, 1, 7, 517, 40000};
  for (int64_t repeat : {1, 200}) {  // 200 copies of the tokens spread the work over the pool
    std::vector<int32_t> all_positions;
    for (int64_t r = 0; r < repeat; ++r) all_positions.insert(all_positions.end(), positions.begin(), positions.end());
    const int64_t num_tokens = static_cast<int64_t>(all_positions.size());
    std::vector<float> x = random_floats(num_tokens * num_heads * head_dim, 3), rotated = x;
    RopeAngles angles;
    rope_angles(pool, all_positions.data(), num_tokens, head_dim, theta, angles);
    rope_rotate_half(pool, rotated.data(), angles, num_heads);
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int i = 0; i < half; ++i) {
        float inv_freq = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / head_dim);
        double angle = static_cast<float>(all_positions[t]) * inv_freq;  // the f32 product, as HF
        for (int h = 0; h < num_heads; ++h) {
          int64_t base = (t * num_heads + h) * head_dim;
          double a = x[base + i], b = x[base + i + half];
          REQUIRE(std::fabs(rotated[base + i] - (a * std::cos(angle) - b * std::sin(angle))) <= 1e-6);
          REQUIRE(std::fabs(rotated[base + i + half] - (b * std::cos(angle) + a * std::sin(angle))) <= 1e-6);
        }
      }
    }
  }
}

TEST_CASE("silu_mul matches g / (1 + exp(-g)) * u, including saturated inputs", "[cpu][ops]") {
  ThreadPool pool(2);
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (int64_t n : {1, 15, 17, 100003}) {
      INFO(path.name << " n " << n);
      std::vector<float> gate = random_floats(n, 4, -30.0f, 30.0f), up = random_floats(n, 5);
      if (n > 4) gate[0] = -120.0f, gate[1] = 120.0f, gate[2] = 0.0f, gate[3] = -1e-8f;
      std::vector<float> out(n);
      silu_mul(pool, gate.data(), up.data(), n, out.data());
      for (int64_t i = 0; i < n; ++i) {
        double g = gate[i];
        double expected = g / (1.0 + std::exp(-g)) * up[i];
        REQUIRE(std::fabs(out[i] - expected) <= 1e-5 * std::fabs(expected) + 1e-30);
      }
      silu_mul(pool, gate.data(), up.data(), n, up.data());  // out aliasing up
      REQUIRE(up == out);
    }
  }
}

TEST_CASE("add_inplace adds elementwise", "[cpu][ops]") {
  ThreadPool pool(2);
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (int64_t n : {1, 9, 300001}) {
      std::vector<float> x = random_floats(n, 6), y = random_floats(n, 7), sum = x;
      add_inplace(pool, sum.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) REQUIRE(sum[i] == x[i] + y[i]);
    }
  }
}

TEST_CASE("bf16 row conversions round like f32_to_bf16 and widen exactly", "[cpu][ops]") {
  std::vector<float> values = random_floats(1001, 8, -1e4f, 1e4f);
  values[0] = std::numeric_limits<float>::quiet_NaN();
  values[1] = std::numeric_limits<float>::infinity();
  values[2] = -0.0f;
  values[3] = 1.00390625f;  // exactly halfway between two bf16 values: ties to even
  values[4] = 1.01171875f;  // halfway, rounds up to even
  values[5] = 1e-40f;       // subnormal
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    INFO(path.name);
    std::vector<uint16_t> narrowed(values.size());
    convert_f32_to_bf16(values.data(), static_cast<int64_t>(values.size()), narrowed.data());
    for (size_t i = 0; i < values.size(); ++i) REQUIRE(narrowed[i] == f32_to_bf16(values[i]));
    std::vector<float> widened(values.size());
    convert_bf16_to_f32(narrowed.data(), static_cast<int64_t>(narrowed.size()), widened.data());
    for (size_t i = 1; i < values.size(); ++i) REQUIRE(widened[i] == bf16_to_f32(narrowed[i]));
    REQUIRE(std::isnan(widened[0]));
  }
}

TEST_CASE("max_value, exp_shifted, mass_at_least and indices_at_least, the sampler's row passes, match scalar loops",
          "[cpu][ops]") {
  const float inf = std::numeric_limits<float>::infinity();
  for (const auto& path : kernel_paths()) {
    ScopedCpuFeatures scoped(path.features);
    for (int64_t n : {1, 15, 17, 2048, 100003}) {
      INFO(path.name << " n " << n);
      std::vector<float> x = random_floats(n, 9, -20.0f, 20.0f);
      x[n - 1] = 25.0f;  // the maximum in the last, partial vector
      if (n > 3) x[0] = std::numeric_limits<float>::quiet_NaN(), x[1] = -inf, x[2] = 30.0f;
      const float expected_max = n > 3 ? 30.0f : 25.0f;
      REQUIRE(max_value(x.data(), n) == expected_max);
      std::vector<float> weights(n);
      const float sum = exp_shifted(x.data() + 1, n - 1, expected_max, weights.data());
      double expected_sum = 0;
      for (int64_t i = 1; i < n; ++i) {
        const double expected = std::exp(static_cast<double>(x[i]) - expected_max);
        REQUIRE(std::fabs(weights[i - 1] - expected) <= 1e-5 * expected + 1e-30);
        expected_sum += expected;
      }
      // Added in float lanes: each lane's ~n / lanes additions round to 2^-24 of its sum.
      REQUIRE(std::fabs(sum - expected_sum) <= 1e-4 * expected_sum);
    }
    for (int64_t n : {1, 15, 17, 100003}) {
      INFO(path.name << " n " << n);
      std::vector<float> x = random_floats(n, 10, 0.0f, 1.0f);
      x[n - 1] = 0.75f;  // in the last, partial vector
      for (float threshold : {0.0f, 0.5f, 0.99f, 2.0f}) {
        std::vector<int32_t> expected_indices, indices(n);
        double expected_mass = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (x[i] >= threshold) expected_indices.push_back(static_cast<int32_t>(i)), expected_mass += x[i];
        }
        indices.resize(static_cast<size_t>(indices_at_least(x.data(), n, threshold, indices.data())));
        REQUIRE(indices == expected_indices);
        REQUIRE(std::fabs(mass_at_least(x.data(), n, threshold) - expected_mass) <= 1e-4 * expected_mass);
      }
    }
    const std::vector<float> masked = {-inf, -inf, std::numeric_limits<float>::quiet_NaN()};
    REQUIRE(max_value(masked.data(), 3) == -inf);
    REQUIRE(max_value(masked.data(), 0) == -inf);
  }
}

}  // namespace
}  // namespace recgpt
