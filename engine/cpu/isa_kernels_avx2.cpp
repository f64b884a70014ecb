// The shared kernels compiled for AVX2 + FMA.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx2.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace recgpt::avx2 {
namespace {
constexpr const char* kIsaName = "avx2";
#include "engine/cpu/isa_kernels_impl.inc"
}  // namespace
}  // namespace recgpt::avx2

#pragma GCC pop_options

namespace recgpt {

const IsaKernels& avx2_kernels() { return avx2::kKernels; }

}  // namespace recgpt
