#include "engine/cpu/cpu_features.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace recgpt {
namespace {

// Linux (5.16+) hands out the 8 KiB of AMX tile state per process on request only.
bool request_amx_permission() {
  constexpr long kArchRequestXcompPermission = 0x1023;
  constexpr long kXfeatureTileData = 18;
  return syscall(SYS_arch_prctl, kArchRequestXcompPermission, kXfeatureTileData) == 0;
}

CpuFeatures detect() {
  __builtin_cpu_init();
  CpuFeatures features;
  features.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  features.avx512 = features.avx2_fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  features.avx512_bf16 = features.avx512 && __builtin_cpu_supports("avx512bf16");
  features.amx_bf16 = features.avx512_bf16 && __builtin_cpu_supports("amx-tile") &&
                      __builtin_cpu_supports("amx-bf16") && request_amx_permission();
  return features;
}

// Bit i set: feature i allowed. All allowed unless a test narrows it.
constexpr unsigned kAllFeatures = 0xf;
std::atomic<unsigned> allowed_features{kAllFeatures};

unsigned to_bits(const CpuFeatures& features) {
  return (features.avx2_fma ? 1u : 0u) | (features.avx512 ? 2u : 0u) | (features.avx512_bf16 ? 4u : 0u) |
         (features.amx_bf16 ? 8u : 0u);
}

}  // namespace

CpuFeatures detected_cpu_features() {
  static const CpuFeatures detected = detect();
  return detected;
}

CpuFeatures cpu_features() {
  unsigned bits = to_bits(detected_cpu_features()) & allowed_features.load(std::memory_order_relaxed);
  CpuFeatures features;
  features.avx2_fma = (bits & 1u) != 0;
  features.avx512 = features.avx2_fma && (bits & 2u) != 0;
  features.avx512_bf16 = features.avx512 && (bits & 4u) != 0;
  features.amx_bf16 = features.avx512_bf16 && (bits & 8u) != 0;
  return features;
}

void set_cpu_features_for_testing(std::optional<CpuFeatures> features) {
  allowed_features.store(features ? to_bits(*features) : kAllFeatures, std::memory_order_relaxed);
}

}  // namespace recgpt
