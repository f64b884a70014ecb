// Internal to kv_transfer's nccl backend: NCCL results as Status (CUDA's: common/cuda_status.h), and the device facts
// the backend needs (where a GPU is, where a pointer's allocation starts). Includes the CUDA and NCCL headers: never
// include this from a header the CPU build sees.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "common/cuda_status.h"
#include "common/status.h"
#include "kv_transfer/nccl/nccl_wire.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv::nccl {

static_assert(sizeof(ncclUniqueId) == kUniqueIdBytes, "ncclUniqueId travels as kUniqueIdBytes bytes");
static_assert(sizeof(cudaIpcMemHandle_t) == kIpcHandleBytes, "cudaIpcMemHandle_t travels as kIpcHandleBytes");

// ok for ncclSuccess and ncclInProgress; otherwise kUnavailable with NCCL's error and last message.
Status nccl_status(ncclResult_t result, const std::string& what, ncclComm_t comm = nullptr);

// Polls a non-blocking communicator until its pending work (initialisation, a group's launch) finished.
// kDeadlineExceeded at the deadline; the caller aborts the communicator then.
Status wait_until_ready(ncclComm_t comm, Deadline deadline, const std::string& what);

// A random number fixed for this process: tells engines of this process from engines elsewhere (process ids
// repeat across containers that share a host name and boot id).
uint64_t process_token();

// The host and PCI bus of a CUDA device.
Result<DeviceLocation> locate_device(int device);

// Where `pointer` sits in its CUDA allocation (cuMemGetAddressRange through the runtime's driver entry
// points, so nothing links libcuda). kInvalidArgument when it is not device memory.
struct AllocationPosition {
  void* allocation_base = nullptr;
  uint64_t offset = 0;
  uint64_t allocation_bytes = 0;
};
Result<AllocationPosition> locate_allocation(const void* pointer);

}  // namespace recgpt::kv::nccl
