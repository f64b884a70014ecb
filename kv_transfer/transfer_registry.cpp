// The only place that knows which transfer backends exist, and the only #ifdef of optional ones.
#include <string>
#include <vector>

#include "kv_transfer/backends.h"
#include "kv_transfer/transfer_engine.h"
#include "kv_transfer/transfer_metrics.h"

namespace recgpt::kv {
namespace {

struct BackendEntry {
  const char* name;
  Result<std::unique_ptr<TransferEngine>> (*create)(const TransferEngineOptions& options);
};

constexpr BackendEntry kBackends[] = {
    {"local", &create_local_transfer_engine},
    {"ucx", [](const TransferEngineOptions& options) { return create_ucx_transfer_engine(options); }},
#ifdef RECGPT_WITH_NCCL
    {"nccl", &create_nccl_transfer_engine},
#endif
};

}  // namespace

std::vector<std::string> transfer_backends() {
  std::vector<std::string> names;
  for (const BackendEntry& entry : kBackends) names.emplace_back(entry.name);
  return names;
}

Result<std::unique_ptr<TransferEngine>> create_transfer_engine(std::string_view backend,
                                                               const TransferEngineOptions& options) {
  std::string available;
  for (const BackendEntry& entry : kBackends) {
    if (backend != entry.name) {
      available += available.empty() ? "" : ", ";
      available += entry.name;
      continue;
    }
    RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<TransferEngine> engine, entry.create(options));
    if (options.metrics != nullptr) engine = with_metrics(std::move(engine), *options.metrics, options.name);
    return engine;
  }
  return not_found("unknown transfer backend '" + std::string(backend) + "' (available: " + available + ")");
}

}  // namespace recgpt::kv
