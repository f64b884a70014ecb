// The device copier over the CUDA runtime: cudaMemcpy on the device's legacy default stream, then that stream
// synchronised (a copy from pageable host memory may return before its DMA landed).
#include <cuda_runtime.h>

#include <string>

#include "common/cuda_status.h"
#include "kv_transfer/device_copy.h"

namespace recgpt::kv {
namespace {

class CudaDeviceCopier final : public DeviceCopier {
 public:
  Status check(const void* base, size_t bytes, int device) override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      return unavailable("no CUDA device: cannot register device " + std::to_string(device) + " memory");
    }
    if (device < 0 || device >= devices) {
      return invalid_argument("CUDA device " + std::to_string(device) + " does not exist (this process sees " +
                              std::to_string(devices) + ")");
    }
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, base) != cudaSuccess) {
      cudaGetLastError();
      return invalid_argument("the region is not memory CUDA knows");
    }
    if (attributes.type != cudaMemoryTypeDevice || attributes.device != device) {
      return invalid_argument("the region of " + std::to_string(bytes) + " bytes is not memory of CUDA device " +
                              std::to_string(device));
    }
    return Status::ok();
  }

  Status to_host(void* host, const void* device_memory, size_t bytes, int device) override {
    return copy(host, device_memory, bytes, device, cudaMemcpyDeviceToHost, "copy device memory to the host");
  }

  Status to_device(void* device_memory, const void* host, size_t bytes, int device) override {
    return copy(device_memory, host, bytes, device, cudaMemcpyHostToDevice, "copy host memory to the device");
  }

 private:
  static Status copy(void* destination, const void* source, size_t bytes, int device, cudaMemcpyKind kind,
                     const char* what) {
    CudaDeviceGuard on_device(device);
    RECGPT_RETURN_IF_ERROR(cuda_status(cudaMemcpy(destination, source, bytes, kind), what));
    return cuda_status(cudaStreamSynchronize(nullptr), what);
  }
};

}  // namespace

std::shared_ptr<DeviceCopier> cuda_device_copier() {
  static const auto copier = std::make_shared<CudaDeviceCopier>();
  return copier;
}

}  // namespace recgpt::kv
