#include <cuda_runtime.h>

#include <utility>

#include "tests/integration/kv_transfer/device_memory.h"

namespace recgpt::kv::testing {
namespace {

Status checked(cudaError_t error, const std::string& what) {
  if (error == cudaSuccess) return Status::ok();
  return unavailable(what + ": " + cudaGetErrorString(error));
}

}  // namespace

CudaDevices cuda_devices() {
  int count = 0;
  cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) return {0, std::string("no CUDA device (") + cudaGetErrorString(error) + ")"};
  return {count, count == 0 ? "no CUDA device" : ""};
}

Result<DeviceMemory> DeviceMemory::allocate(size_t bytes, int device) {
  RECGPT_RETURN_IF_ERROR(checked(cudaSetDevice(device), "cudaSetDevice"));
  DeviceMemory memory;
  RECGPT_RETURN_IF_ERROR(checked(cudaMalloc(&memory.base_, bytes), "cudaMalloc"));
  memory.bytes_ = bytes;
  memory.device_ = device;
  return memory;
}

DeviceMemory::DeviceMemory(DeviceMemory&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)), bytes_(other.bytes_), device_(other.device_) {}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  std::swap(base_, other.base_);
  std::swap(bytes_, other.bytes_);
  std::swap(device_, other.device_);
  return *this;
}

DeviceMemory::~DeviceMemory() {
  if (base_ != nullptr) cudaFree(base_);
}

Status DeviceMemory::upload(const CacheMemory& host) {
  if (host.size() != bytes_) return invalid_argument("upload: the host copy differs in size");
  return checked(cudaMemcpy(base_, host.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
}

Status DeviceMemory::download(CacheMemory& host) const {
  if (host.size() != bytes_) return invalid_argument("download: the host copy differs in size");
  return checked(cudaMemcpy(host.data(), base_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
}

}  // namespace recgpt::kv::testing
