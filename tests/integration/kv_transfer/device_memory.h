// CUDA device memory for the GPU variants of the stream tests. Built over the CUDA runtime when the build has
// it (device_memory_cuda.cpp), otherwise every call says so (device_memory_none.cpp): callers never #ifdef.
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"
#include "kv_transfer/transfer_engine.h"
#include "tests/integration/kv_transfer/stream_scenario.h"

namespace recgpt::kv::testing {

// The CUDA devices this process sees, or the reason it sees none ("not built with CUDA", "no CUDA device").
struct CudaDevices {
  int count = 0;
  std::string why_none;
};
CudaDevices cuda_devices();

class DeviceMemory {
 public:
  // `bytes` of device memory on `device` (cudaMalloc).
  static Result<DeviceMemory> allocate(size_t bytes, int device);
  DeviceMemory() = default;
  DeviceMemory(DeviceMemory&& other) noexcept;
  DeviceMemory& operator=(DeviceMemory&& other) noexcept;
  ~DeviceMemory();

  MemoryRegion region() const { return {base_, bytes_, MemoryKind::kCuda, device_}; }
  Status upload(const CacheMemory& host);  // host -> device, host.size() must equal the allocation
  Status download(CacheMemory& host) const;

 private:
  void* base_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
};

}  // namespace recgpt::kv::testing
