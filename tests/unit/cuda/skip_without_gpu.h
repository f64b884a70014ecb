// SKIP_WITHOUT_GPU() ends a test case with a "SKIPPED:" warning (ctest counts it as skipped) where no CUDA device
// is there. For the tests that call CUDA directly (tests/unit/cuda/, built only with CUDA).
#pragma once

#include <cuda_runtime.h>

#include <string>

namespace recgpt::testing {

// Why no CUDA device can be used here, or empty.
inline std::string why_no_gpu() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(error);
  return count == 0 ? "no CUDA device" : "";
}

}  // namespace recgpt::testing

#define SKIP_WITHOUT_GPU()                                               \
  if (std::string why = ::recgpt::testing::why_no_gpu(); !why.empty()) { \
    WARN("SKIPPED: " << why);                                            \
    return;                                                              \
  }
