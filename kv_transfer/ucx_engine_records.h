// Internal to kv_transfer's ucx backend: what a UcxTransferEngine keeps per registered and imported region, per
// peer and per notification, and what closing endpoints leaves to release. Guarded by the engine's worker mutex
// (ucx_transfer_engine.cpp).
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "kv_transfer/transfer_engine.h"
#include "kv_transfer/ucx_operation.h"
#include "kv_transfer/ucx_wire.h"

namespace recgpt::kv::ucx_records {

struct Region {
  std::byte* base = nullptr;
  uint64_t bytes = 0;
  ucp_mem_h memory = nullptr;  // null for a staged region
  int staged_device = -1;      // >= 0: memory of that CUDA device, which UCX cannot reach here
};

struct ImportedRegion {
  uint64_t base_address = 0;
  uint64_t bytes = 0;
  ucp_rkey_h rkey = nullptr;  // null for a region its owner stages: active messages only
  LocalRegionId region_at_peer = 0;
};

// The local and the remote region of each op of a batch.
using ResolvedOps = std::vector<std::pair<const Region*, const ImportedRegion*>>;

struct Peer {
  uint64_t uuid = 0;
  ucp_ep_h endpoint = nullptr;
  bool connected = true;
  Status failure;  // why it is no longer connected
  std::unordered_map<RemoteRegionId, ImportedRegion> imported;
  AbandonFlag abandon = std::make_shared<std::atomic<bool>>(false);  // shared with the handles of its writes
};

// What a notification's active message carries; UCX reads it until the send completes.
struct NotificationPayload {
  NotifyWire header;
  Bytes data;  // the sender's endpoint then the message
};

// What closing endpoints leaves to release once their closes finished (drain_locked).
struct Closing {
  std::vector<ucs_status_ptr_t> requests;  // of ucp_ep_close_nbx (or a worker flush)
  std::vector<ucp_rkey_h> rkeys;           // the closed endpoints' remote keys
};

// A notification waiting for the flush of its peer's earlier writes.
struct PendingNotification {
  PeerId peer = 0;
  std::shared_ptr<Operation> flush;
  std::shared_ptr<Operation> send;
  NotificationPayload payload;
};

struct IncomingNotification {
  uint64_t sender_uuid = 0;
  Bytes sender_endpoint;
  Bytes message;
};

}  // namespace recgpt::kv::ucx_records
