#include "kv_transfer/ucx_worker.h"

#include <ucs/debug/log_def.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string_view>

namespace recgpt::kv {

Status ucx_failure(const std::string& what, ucs_status_t status) {
  return unavailable(what + ": " + ucs_status_string(status));
}

namespace {

// UCX logs to stdout by default, where `recgpt` commands print their results (JSON, npy paths). Its messages go
// to stderr instead, at the levels UCX_LOG_LEVEL allows.
ucs_log_func_rc_t log_to_stderr(const char* file, unsigned line, const char*, ucs_log_level_t level,
                                const ucs_log_component_config_t* component, const char* format, va_list arguments) {
  if (level > component->log_level) return UCS_LOG_FUNC_RC_STOP;
  char message[1024];
  std::vsnprintf(message, sizeof(message), format, arguments);
  const char* base = std::strrchr(file, '/');
  std::fprintf(stderr, "ucx %s %s:%u %s\n", ucs_log_level_names[level], base != nullptr ? base + 1 : file, line,
               message);
  return UCS_LOG_FUNC_RC_STOP;
}

}  // namespace

Result<UcxSettings> parse_ucx_settings(const TransferEngineOptions& options) {
  UcxSettings settings;
  for (const auto& [key, value] : options.settings) {
    if (key == "tls") {
      settings.tls = value;
    } else if (key == "devices") {
      settings.devices = value;
    } else if (key == "write_op" && (value == "auto" || value == "put" || value == "am")) {
      settings.write_operation = value == "auto"  ? WriteOperation::kAuto
                                 : value == "put" ? WriteOperation::kPut
                                                  : WriteOperation::kActiveMessage;
    } else if (key == "write_op") {
      return invalid_argument("ucx setting write_op must be 'auto', 'put' or 'am', got '" + value + "'");
    } else {
      return invalid_argument("unknown ucx transfer setting '" + key + "' (known: tls, devices, write_op)");
    }
  }
  return settings;
}

bool detects_peer_failure(std::string_view tls) {
  std::string list(tls);
  if (list.empty()) {
    const char* environment = std::getenv("UCX_TLS");
    list = environment != nullptr ? environment : "";
  }
  if (list.empty() || list.front() == '^') return true;  // all transports, or all but some: tcp among them
  static const std::set<std::string, std::less<>> kWithout = {
      "sm",   "shm",       "mm",       "posix",    "sysv", "xpmem",     "cma",      "knem",    "self",
      "cuda", "cuda_copy", "cuda_ipc", "gdr_copy", "rocm", "rocm_copy", "rocm_ipc", "rocm_gdr"};
  size_t begin = 0;
  while (begin <= list.size()) {
    size_t end = list.find(',', begin);
    if (end == std::string::npos) end = list.size();
    std::string_view name = std::string_view(list).substr(begin, end - begin);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (!name.empty() && kWithout.count(name) == 0) return true;
    begin = end + 1;
  }
  return false;
}

Status open_ucx_worker(const UcxSettings& settings, const std::string& name, UcxWorker& worker,
                       uint64_t* memory_types) {
  static std::once_flag log_handler_installed;
  std::call_once(log_handler_installed, [] { ucs_log_push_handler(&log_to_stderr); });
  ucp_config_t* config = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &config);
  if (status != UCS_OK) return ucx_failure("ucp_config_read", status);
  if (!settings.tls.empty()) status = ucp_config_modify(config, "TLS", settings.tls.c_str());
  if (status == UCS_OK && !settings.devices.empty()) {
    status = ucp_config_modify(config, "NET_DEVICES", settings.devices.c_str());
  }
  if (status != UCS_OK) {
    ucp_config_release(config);
    return invalid_argument("ucx refused the tls/devices settings: " + std::string(ucs_status_string(status)));
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.name = name.c_str();
  status = ucp_init(&params, config, &worker.context);
  ucp_config_release(config);
  if (status != UCS_OK) return ucx_failure("ucp_init (tls '" + settings.tls + "')", status);

  ucp_context_attr_t attributes{};
  attributes.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  status = ucp_context_query(worker.context, &attributes);
  *memory_types = status == UCS_OK ? attributes.memory_types : UCS_BIT(UCS_MEMORY_TYPE_HOST);

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  status = ucp_worker_create(worker.context, &worker_params, &worker.worker);
  if (status != UCS_OK) return ucx_failure("ucp_worker_create (tls '" + settings.tls + "')", status);
  return Status::ok();
}

}  // namespace recgpt::kv
