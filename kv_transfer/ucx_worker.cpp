#include "kv_transfer/ucx_worker.h"

namespace recgpt::kv {

Status ucx_failure(const std::string& what, ucs_status_t status) {
  return unavailable(what + ": " + ucs_status_string(status));
}

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

Status open_ucx_worker(const UcxSettings& settings, const std::string& name, UcxWorker& worker,
                       uint64_t* memory_types) {
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
