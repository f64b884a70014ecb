#include "kv_transfer/nccl/cuda_calls.h"

#include <cuda.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <random>
#include <thread>

namespace recgpt::kv::nccl {

Status nccl_status(ncclResult_t result, const std::string& what, ncclComm_t comm) {
  if (result == ncclSuccess || result == ncclInProgress) return Status::ok();
  std::string detail = ncclGetErrorString(result);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') detail += std::string(": ") + last;
  return unavailable(what + ": " + detail);
}

Status wait_until_ready(ncclComm_t comm, Deadline deadline, const std::string& what) {
  for (auto pause = std::chrono::microseconds(20);; pause = std::min(pause * 2, std::chrono::microseconds(1000))) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t queried = ncclCommGetAsyncError(comm, &state);
    if (queried != ncclSuccess) return nccl_status(queried, what + " (ncclCommGetAsyncError)", comm);
    if (state == ncclSuccess) return Status::ok();
    if (state != ncclInProgress) return nccl_status(state, what, comm);
    if (Clock::now() >= deadline) return deadline_exceeded(what + " did not finish before the deadline");
    std::this_thread::sleep_for(pause);
  }
}

uint64_t process_token() {
  static const uint64_t token = [] {
    std::random_device device;
    return (uint64_t{device()} << 32) ^ device();
  }();
  return token;
}

Result<DeviceLocation> locate_device(int device) {
  DeviceLocation location;
  RECGPT_RETURN_IF_ERROR(cuda_status(cudaDeviceGetPCIBusId(location.bus_id, kBusIdBytes - 1, device),
                                     "cudaDeviceGetPCIBusId of device " + std::to_string(device)));
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  std::string boot_id;
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::getline(boot, boot_id);
  location.host_hash = std::hash<std::string>{}(std::string(host) + "/" + boot_id);
  return location;
}

Result<AllocationPosition> locate_allocation(const void* pointer) {
  using GetAddressRange = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
  static const GetAddressRange get_address_range = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    cudaError_t error =
        cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &function, 12000, cudaEnableDefault, &found);
    return error == cudaSuccess && found == cudaDriverEntryPointSuccess ? reinterpret_cast<GetAddressRange>(function)
                                                                        : nullptr;
  }();
  if (get_address_range == nullptr) return unavailable("the CUDA driver offers no cuMemGetAddressRange");
  CUdeviceptr base = 0;
  size_t bytes = 0;
  if (get_address_range(&base, &bytes, reinterpret_cast<CUdeviceptr>(pointer)) != CUDA_SUCCESS) {
    return invalid_argument("the address is not in a CUDA device allocation");
  }
  return AllocationPosition{reinterpret_cast<void*>(base), reinterpret_cast<uintptr_t>(pointer) - base, bytes};
}

}  // namespace recgpt::kv::nccl
