// Helpers shared by the CPU kernel tests: random data and running a test once per kernel dispatch path.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/cpu_features.h"
#include "engine/dtype.h"

namespace recgpt::testing {

// Restricts the kernels to `features` for the lifetime of the object.
class ScopedCpuFeatures {
 public:
  explicit ScopedCpuFeatures(const CpuFeatures& features) { set_cpu_features_for_testing(features); }
  ~ScopedCpuFeatures() { set_cpu_features_for_testing(std::nullopt); }
  ScopedCpuFeatures(const ScopedCpuFeatures&) = delete;
  ScopedCpuFeatures& operator=(const ScopedCpuFeatures&) = delete;
};

struct KernelPath {
  std::string name;
  CpuFeatures features;
};

// Every dispatch path this CPU can run: amx, avx512_bf16 (no AMX), avx512 (no bf16 dot), avx2.
inline std::vector<KernelPath> kernel_paths() {
  CpuFeatures detected = detected_cpu_features();
  std::vector<KernelPath> paths;
  if (detected.amx_bf16) paths.push_back({"amx", {true, true, true, true}});
  if (detected.avx512_bf16) paths.push_back({"avx512_bf16", {true, true, true, false}});
  if (detected.avx512) paths.push_back({"avx512", {true, true, false, false}});
  if (detected.avx2_fma) paths.push_back({"avx2", {true, false, false, false}});
  return paths;
}

inline std::vector<float> random_floats(size_t count, uint32_t seed, float low = -1.0f, float high = 1.0f) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> uniform(low, high);
  std::vector<float> values(count);
  for (float& value : values) value = uniform(random);
  return values;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& values) {
  std::vector<uint16_t> result(values.size());
  for (size_t i = 0; i < values.size(); ++i) result[i] = f32_to_bf16(values[i]);
  return result;
}

}  // namespace recgpt::testing
