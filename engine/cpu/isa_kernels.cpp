#include "engine/cpu/isa_kernels.h"

#include "common/status.h"
#include "engine/cpu/cpu_features.h"

namespace recgpt {

const IsaKernels& isa_kernels() {
  CpuFeatures features = cpu_features();
  if (features.avx512) return avx512_kernels();
  RECGPT_CHECK_MSG(features.avx2_fma, "the CPU kernels need at least AVX2 and FMA");
  return avx2_kernels();
}

}  // namespace recgpt
