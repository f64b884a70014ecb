// The admin HTTP endpoint every node serves on its own port (../shared/DESIGN.md §5):
//   GET /metrics  Prometheus text exposition of the node's registry
//   GET /healthz  200 while the process serves
//   GET /readyz   200 once the readiness check passes (model loaded, peers reachable), else 503 with the reason
// Anything else: 404 (unknown path) or 405 (not GET or HEAD). Served by common/http's server, with small bounds: a
// header over 8 KiB (431) or any body (413) is refused, a client that stalls is dropped after a few seconds, at
// most 64 connections at once. Runs on the caller's io_context, as coroutines.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace boost::asio {
class io_context;
}
namespace prometheus {
class Registry;
}

namespace recgpt::admin {

struct AdminOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port (see AdminServer::port)
  std::shared_ptr<prometheus::Registry> registry;
  // ok when ready; otherwise the reason /readyz reports. Called on the io_context's thread. Unset: always ready.
  std::function<Status()> readiness;
};

class AdminServer {
 public:
  // Binds and starts accepting. kUnavailable when the address cannot be bound (naming it).
  static Result<std::unique_ptr<AdminServer>> start(boost::asio::io_context& io, AdminOptions options);
  virtual ~AdminServer() = default;  // stops accepting; call on the io_context's thread
  virtual uint16_t port() const = 0;
  // Stops accepting and closes its connections. Call from the io_context's thread.
  virtual void stop() = 0;
};

}  // namespace recgpt::admin
