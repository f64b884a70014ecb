// Owned device memory for the CUDA backend: weights uploaded once, activations grown to the largest step seen.
// Includes the CUDA runtime header: internal to cuda_kernels/.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "common/cuda_status.h"
#include "common/status.h"

namespace recgpt::cuda {

// cudaMalloc'd bytes on the current device, freed with the buffer. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFree(data_);
  }

  // kResourceExhausted naming the size when the device has no room.
  static Result<DeviceBuffer> allocate(size_t bytes) {
    DeviceBuffer buffer;
    if (bytes == 0) return buffer;
    if (cudaMalloc(&buffer.data_, bytes) != cudaSuccess) {
      cudaGetLastError();  // not sticky: clear it for the calls after
      return resource_exhausted("cannot allocate " + std::to_string(bytes) + " bytes of GPU memory");
    }
    buffer.bytes_ = bytes;
    return buffer;
  }

  // Holds at least `bytes` after (contents are lost when it grows); true when the memory moved, which makes any
  // CUDA graph captured over the old address stale.
  Result<bool> reserve(size_t bytes) {
    if (bytes <= bytes_) return false;
    *this = DeviceBuffer();
    RECGPT_ASSIGN_OR_RETURN(*this, allocate(bytes + bytes / 2));  // headroom: fewer moves as steps grow
    return true;
  }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace recgpt::cuda
