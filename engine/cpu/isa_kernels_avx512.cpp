// The shared kernels compiled for AVX-512 (F, BW, VL, DQ).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx512.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")

namespace recgpt::avx512 {
namespace {
constexpr const char* kIsaName = "avx512";
#include "engine/cpu/isa_kernels_impl.inc"
}  // namespace
}  // namespace recgpt::avx512

#pragma GCC pop_options

namespace recgpt {

const IsaKernels& avx512_kernels() { return avx512::kKernels; }

}  // namespace recgpt
