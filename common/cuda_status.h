// CUDA runtime results as Status, and a scoped current device: for code built over the CUDA runtime (the CUDA
// backend, kv_transfer's nccl backend). Includes cuda_runtime.h: never include it from a header a CPU build sees.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "common/status.h"

namespace recgpt {

// ok for cudaSuccess; otherwise kUnavailable naming the call and CUDA's error.
inline Status cuda_status(cudaError_t error, const std::string& what) {
  if (error == cudaSuccess) return Status::ok();
  return unavailable(what + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")");
}

// Makes `device` current for the scope and restores the caller's device after: engine and transfer calls run on
// application threads, whose current device is theirs.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) cudaSetDevice(device);
  }
  ~CudaDeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace recgpt
