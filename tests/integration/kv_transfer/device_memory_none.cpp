#include "tests/integration/kv_transfer/device_memory.h"

namespace recgpt::kv::testing {
namespace {

Status no_cuda() { return unimplemented("this build has no CUDA runtime (RECGPT_NCCL found none)"); }

}  // namespace

CudaDevices cuda_devices() { return {0, "this build has no CUDA runtime"}; }

Result<DeviceMemory> DeviceMemory::allocate(size_t, int) { return no_cuda(); }
DeviceMemory::DeviceMemory(DeviceMemory&&) noexcept = default;
DeviceMemory& DeviceMemory::operator=(DeviceMemory&&) noexcept = default;
DeviceMemory::~DeviceMemory() = default;
Status DeviceMemory::upload(const CacheMemory&) { return no_cuda(); }
Status DeviceMemory::download(CacheMemory&) const { return no_cuda(); }

}  // namespace recgpt::kv::testing
