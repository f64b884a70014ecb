// Copies between host memory and a CUDA device's memory, for transports that cannot reach device memory
// themselves (a UCX built without cuda_copy/cuda_ipc, as Debian's is): the ucx backend stages device regions
// through host buffers with it. Built over the CUDA runtime where the build has it
// (device_copy/device_copy_cuda.cpp), else there is none (device_copy/device_copy_none.cpp): callers never #ifdef.
//
// Every call is synchronous: it returns once the bytes are at their destination, so a notification sent after
// it can never overtake them. Thread-safe.
#pragma once

#include <cstddef>
#include <memory>

#include "common/status.h"

namespace recgpt::kv {

class DeviceCopier {
 public:
  virtual ~DeviceCopier() = default;
  // ok when `base` is memory of CUDA device `device`; kInvalidArgument (kUnavailable without a GPU) otherwise.
  virtual Status check(const void* base, size_t bytes, int device) = 0;
  virtual Status to_host(void* host, const void* device_memory, size_t bytes, int device) = 0;
  virtual Status to_device(void* device_memory, const void* host, size_t bytes, int device) = 0;
};

// The CUDA runtime's copier; nullptr in a build without the CUDA runtime.
std::shared_ptr<DeviceCopier> cuda_device_copier();

}  // namespace recgpt::kv
