// Internal to kv_transfer: Prometheus metrics for any backend, as a TransferEngine that wraps another.
// create_transfer_engine() applies it when TransferEngineOptions::metrics is set.
//
// Families (const label node = the engine's name; backend = its backend):
//   recgpt_kv_transfer_operations_total{operation="writes"|"notify", outcome}  counter
//   recgpt_kv_transfer_bytes_total{outcome}                                   counter, bytes of write batches
//   recgpt_kv_transfer_duration_seconds{operation}                            histogram, submission to completion
// Outcomes: "ok", "failed", "cancelled", "refused" (the submission itself was refused), "dropped" (the handle
// was destroyed while still pending). A handle's outcome is taken when its user first sees it settled (poll,
// wait, cancel, status) or when it is destroyed, so a duration includes the user's latency in looking.
#pragma once

#include <memory>

#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv {

std::unique_ptr<TransferEngine> with_metrics(std::unique_ptr<TransferEngine> engine, prometheus::Registry& registry,
                                             const std::string& node);

}  // namespace recgpt::kv
