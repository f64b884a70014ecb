// Internal to kv_transfer: the factories of the compiled-in backends. Only transfer_registry.cpp calls them.
#pragma once

#include <memory>

#include "common/status.h"
#include "kv_transfer/device_copy.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv {

// In-process memcpy between engines of the same process (local_transfer_engine.cpp).
Result<std::unique_ptr<TransferEngine>> create_local_transfer_engine(const TransferEngineOptions& options);

// UCP workers, put (or active-message) writes, flush-then-notify (ucx_transfer_engine.cpp). Settings: `tls`
// (UCX_TLS, e.g. "tcp", "posix,cma,self"), `devices` (UCX_NET_DEVICES), `write_op` ("auto" default: puts over shared
// memory, active messages over the network; or "put", "am"). Device regions UCX cannot reach are staged through
// host memory with `device_copier` (tests pass their own; null refuses them).
Result<std::unique_ptr<TransferEngine>> create_ucx_transfer_engine(
    const TransferEngineOptions& options, std::shared_ptr<DeviceCopier> device_copier = cuda_device_copier());
// A ucx engine keeps the records of this many dead or disconnected peers (the most recent), so that their ids
// still answer why they fail; older ids are unknown.
inline constexpr size_t kUcxRetainedDeadPeers = 64;

// CUDA device memory between GPUs: NCCL send/recv of block lists, CUDA IPC copies between engines on one GPU,
// an inner ucx engine as control channel (nccl/nccl_transfer_engine.cpp; built with RECGPT_WITH_NCCL only).
// Settings: `device` (CUDA device index, default 0), `control_tls` (default "tcp"), `control_devices`.
// kUnavailable when the process sees no CUDA device.
Result<std::unique_ptr<TransferEngine>> create_nccl_transfer_engine(const TransferEngineOptions& options);

}  // namespace recgpt::kv
