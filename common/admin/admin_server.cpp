#include "common/admin/admin_server.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <boost/asio/io_context.hpp>
#include <chrono>

#include "common/http/http_server.h"

namespace recgpt::admin {
namespace {

namespace asio = boost::asio;

constexpr std::chrono::seconds kClientTimeout(5);
constexpr uint32_t kHeaderLimitBytes = 8 * 1024;
constexpr int kMaxConnections = 64;  // scrapers and probes, not clients

http::Response text(int status, std::string body, std::string content_type = "text/plain; charset=utf-8") {
  http::Response response;
  response.status = status;
  response.content_type = std::move(content_type);
  response.body = std::move(body);
  return response;
}

http::Response answer(const AdminOptions& options, const http::Request& request) {
  const std::string& path = request.path;
  if (path != "/metrics" && path != "/healthz" && path != "/readyz") return text(404, "not found: " + path + "\n");
  if (request.method != "GET" && request.method != "HEAD") {
    http::Response refused = text(405, "only GET\n");
    refused.headers.emplace_back("Allow", "GET, HEAD");
    return refused;
  }
  if (path == "/healthz") return text(200, "ok\n");
  if (path == "/readyz") {
    const Status ready = options.readiness ? options.readiness() : Status::ok();
    return ready.is_ok() ? text(200, "ready\n") : text(503, "not ready: " + ready.message() + "\n");
  }
  std::string exposition;
  if (options.registry != nullptr) exposition = prometheus::TextSerializer().Serialize(options.registry->Collect());
  return text(200, std::move(exposition), "text/plain; version=0.0.4; charset=utf-8");
}

class HttpAdminServer final : public AdminServer {
 public:
  explicit HttpAdminServer(std::unique_ptr<http::Server> server) : server_(std::move(server)) {}
  ~HttpAdminServer() override { server_->stop(); }
  uint16_t port() const override { return server_->port(); }
  void stop() override { server_->stop(); }

 private:
  std::unique_ptr<http::Server> server_;
};

}  // namespace

Result<std::unique_ptr<AdminServer>> AdminServer::start(asio::io_context& io, AdminOptions options) {
  http::ServerOptions server_options;
  server_options.address = options.address;
  server_options.port = options.port;
  server_options.max_header_bytes = kHeaderLimitBytes;
  server_options.max_body_bytes = 0;
  server_options.max_connections = kMaxConnections;
  server_options.idle_timeout = kClientTimeout;
  server_options.read_timeout = kClientTimeout;
  server_options.write_timeout = kClientTimeout;
  auto shared = std::make_shared<const AdminOptions>(std::move(options));
  http::Handler handler = [shared](http::Exchange& exchange) -> asio::awaitable<void> {
    http::Response response = answer(*shared, exchange.request());
    if (exchange.request().method == "HEAD") response.body.clear();
    co_await exchange.respond(std::move(response));
  };
  auto server = http::Server::start(io, server_options, std::move(handler));
  if (!server.is_ok()) return unavailable("the admin endpoint: " + server.status().message());
  return std::unique_ptr<AdminServer>(std::make_unique<HttpAdminServer>(std::move(server).value()));
}

}  // namespace recgpt::admin
