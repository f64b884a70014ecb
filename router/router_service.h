// `recgpt router`: the HTTP/JSON API over the cluster. OpenAI-compatible completions and chat completions
// (streaming or not), /v1/models, /v1/cluster, /healthz, /readyz, /metrics; optional bearer-token auth on /v1/*.
// Each completion is tokenized here (ChatML for chat), placed by the policy and run by run_call; stop strings
// are matched on the detokenized text; a client that hangs up cancels its call on the nodes.
//
// Threading: the caller's io_context (one thread) runs the HTTP server, the cluster links and every call.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace boost::asio {
class io_context;
}

namespace recgpt {
class ModelFiles;
}

namespace recgpt::router {

struct RouterOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 8000;               // 0: ephemeral (see RouterService::port)
  std::string model_name = "recgpt";  // what /v1/models lists and requests must name
  std::string api_key;                // empty: no auth
  std::string policy = "prefix_aware";
  std::vector<std::string> prefill_nodes;  // control addresses, host:port
  std::vector<std::string> decode_nodes;
  // DNS names (name:port) whose addresses are nodes, resolved again every dns_refresh (a headless Service).
  std::vector<std::string> prefill_dns;
  std::vector<std::string> decode_dns;
  std::chrono::milliseconds dns_refresh{5000};
  std::string workflows_dir;  // workflow definitions (*.json); empty: the built-in ones (intent, explain, judge)
  std::string entity_store;   // items it knows become entity tokens in workflow contexts; empty: titles
  std::chrono::milliseconds request_timeout{120000};  // a request's deadline unless it sets `timeout`
  std::chrono::milliseconds node_silence{10000};      // a node silent this long is cut off (Cluster)
  uint64_t max_body_bytes = 8 << 20;
  int max_connections = 1024;
};

class RouterService {
 public:
  // Loads the tokenizer, connects to the nodes (in the background: they may come later) and starts serving.
  // kInvalidArgument for a bad option (naming it), kUnavailable when the port cannot be bound.
  static Result<std::unique_ptr<RouterService>> start(boost::asio::io_context& io, const ModelFiles& model,
                                                      RouterOptions options);
  virtual ~RouterService() = default;  // call on the io_context's thread
  virtual uint16_t port() const = 0;
  // SIGTERM: stop accepting, let requests in progress finish until `within`, then `drained` runs.
  virtual void drain(std::chrono::milliseconds within, std::function<void()> drained) = 0;
  virtual void stop() = 0;
};

}  // namespace recgpt::router
