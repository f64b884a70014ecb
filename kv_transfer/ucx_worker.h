// Internal to kv_transfer's ucx backend (included only by ucx_*.cpp, never by a public header): the UCP
// context and worker an engine runs on, and the backend's settings.
#pragma once

#include <ucp/api/ucp.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv {

// How submit_writes moves bytes. Over tcp UCX emulates RMA in software; active messages (eager, then
// rendezvous for large ones) take the faster send path there, and the receiver's handler places the bytes.
// kAuto chooses per peer (ucx_transfer_engine.cpp, uses_puts).
enum class WriteOperation { kAuto, kPut, kActiveMessage };

// The UCP context and worker, shared by the engine and the handles it issued (so that a handle outliving its
// engine can still be cancelled safely). `mutex` serialises every UCX call and the engine's state.
struct UcxWorker {
  std::mutex mutex;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  // The operations (ucx_operation.h) whose requests UCX still holds, by address: kept alive until their last
  // request completes, which for requests to a dead peer over shared memory is never; those go with the worker.
  // Guarded by `mutex`.
  std::unordered_map<const void*, std::shared_ptr<void>> pending_operations;

  ~UcxWorker() {
    if (worker != nullptr) ucp_worker_destroy(worker);
    if (context != nullptr) ucp_cleanup(context);
  }  // pending_operations is released after: no request can complete any more
};

struct UcxSettings {
  std::string tls;
  std::string devices;
  WriteOperation write_operation = WriteOperation::kAuto;
};

// kInvalidArgument for unknown keys or values (tls, devices, write_op).
Result<UcxSettings> parse_ucx_settings(const TransferEngineOptions& options);

// Whether endpoints over these transports (UCX_TLS syntax; empty: the environment's UCX_TLS, else all) can detect
// a peer's failure (UCP_ERR_HANDLING_MODE_PEER): unless every transport named is a shared-memory, loopback or GPU
// copy one, which UCX 1.13 cannot give failure detection. Decided from the configuration, never from a failed
// connection: a peer that refuses the connection (dead) must not switch the engine to endpoints without failure
// detection, over which UCX 1.13 aborts the process when a peer dies.
bool detects_peer_failure(std::string_view tls);

// Creates the context (RMA, AM and wakeup features, the tls/devices settings) and a serialized-mode worker in
// `worker`; `memory_types` receives the context's UCS_BIT(ucs_memory_type) mask.
Status open_ucx_worker(const UcxSettings& settings, const std::string& name, UcxWorker& worker, uint64_t* memory_types);

// kUnavailable "<what>: <UCX's status string>".
Status ucx_failure(const std::string& what, ucs_status_t status);

}  // namespace recgpt::kv
