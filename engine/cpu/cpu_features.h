// Which SIMD instruction sets the CPU kernels may use, detected once at run time.
//
// The engine is built for baseline x86-64 and picks kernels at run time (never -march=native), so one binary
// runs on AVX-512 machines (Zen 4, Sapphire Rapids) and, slower, on AVX2-only ones. AVX2 + FMA is the minimum.
#pragma once

#include <optional>

namespace recgpt {

struct CpuFeatures {
  bool avx2_fma = false;     // AVX2 and FMA3
  bool avx512 = false;       // AVX-512 F, BW, VL, DQ
  bool avx512_bf16 = false;  // AVX512_BF16 (VDPBF16PS, VCVTNE2PS2BF16), on top of `avx512`
  bool amx_bf16 = false;     // AMX-TILE + AMX-BF16 with the kernel's permission to use tile data, on top of the above
};

// Features the kernels use: what the CPU has, narrowed by set_cpu_features_for_testing. Thread-safe to read.
CpuFeatures cpu_features();

// What the CPU has, ignoring any testing override.
CpuFeatures detected_cpu_features();

// Test hook: restricts the kernels to `features` (intersected with what the CPU has) so tests can run the
// fallback paths on an AVX-512 machine; nullopt restores detection. Not for use while kernels run on other threads.
void set_cpu_features_for_testing(std::optional<CpuFeatures> features);

}  // namespace recgpt
