#include "common/admin/admin_server.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

namespace recgpt::admin {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

constexpr auto kClientTimeout = std::chrono::seconds(5);
constexpr uint32_t kHeaderLimitBytes = 8 * 1024;

http::response<http::string_body> reply(const http::request<http::empty_body>& request, http::status status,
                                        std::string body, const char* content_type = "text/plain; charset=utf-8") {
  http::response<http::string_body> response(status, request.version());
  response.set(http::field::content_type, content_type);
  response.keep_alive(request.keep_alive());
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

// The listening socket and what the answers need; shared with the coroutines that serve, so that destroying
// the AdminServer while they are suspended is safe.
class Endpoint : public std::enable_shared_from_this<Endpoint> {
 public:
  Endpoint(asio::io_context& io, AdminOptions options) : acceptor_(io), options_(std::move(options)) {}

  Status bind() {
    boost::system::error_code error;
    tcp::endpoint endpoint(asio::ip::make_address(options_.address, error), options_.port);
    if (!error) acceptor_.open(endpoint.protocol(), error);
    if (!error) acceptor_.set_option(tcp::acceptor::reuse_address(true), error);
    if (!error) acceptor_.bind(endpoint, error);
    if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
    if (!error) port_ = acceptor_.local_endpoint().port();
    if (error) {
      return unavailable("the admin endpoint cannot listen on " + options_.address + ":" +
                         std::to_string(options_.port) + ": " + error.message());
    }
    return Status::ok();
  }

  void run() {
    asio::co_spawn(
        acceptor_.get_executor(), [self = shared_from_this()] { return self->accept_loop(); }, asio::detached);
  }

  uint16_t port() const { return port_; }

  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }

 private:
  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    while (acceptor_.is_open()) {
      boost::system::error_code error;
      tcp::socket socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, error));
      if (error) continue;  // closed (the loop ends) or a transient accept error
      asio::co_spawn(acceptor_.get_executor(), self->serve(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  asio::awaitable<void> serve(beast::tcp_stream stream) {
    auto self = shared_from_this();
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::empty_body> parser;
      parser.header_limit(kHeaderLimitBytes);
      parser.body_limit(0);
      stream.expires_after(kClientTimeout);
      boost::system::error_code error;
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
      if (error) break;  // closed, timed out, or not HTTP: nothing to answer
      const http::request<http::empty_body>& request = parser.get();
      http::response<http::string_body> response = respond(request);
      co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, error));
      if (error || !response.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  http::response<http::string_body> respond(const http::request<http::empty_body>& request) {
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    if (path != "/metrics" && path != "/healthz" && path != "/readyz") {
      return reply(request, http::status::not_found, "not found: " + std::string(path) + "\n");
    }
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      auto response = reply(request, http::status::method_not_allowed, "only GET\n");
      response.set(http::field::allow, "GET, HEAD");
      return response;
    }
    if (path == "/healthz") return reply(request, http::status::ok, "ok\n");
    if (path == "/readyz") {
      Status ready = options_.readiness ? options_.readiness() : Status::ok();
      return ready.is_ok() ? reply(request, http::status::ok, "ready\n")
                           : reply(request, http::status::service_unavailable, "not ready: " + ready.message() + "\n");
    }
    std::string text;
    if (options_.registry != nullptr) text = prometheus::TextSerializer().Serialize(options_.registry->Collect());
    return reply(request, http::status::ok, std::move(text), "text/plain; version=0.0.4; charset=utf-8");
  }

  tcp::acceptor acceptor_;
  AdminOptions options_;
  uint16_t port_ = 0;
};

class BeastAdminServer final : public AdminServer {
 public:
  explicit BeastAdminServer(std::shared_ptr<Endpoint> endpoint) : endpoint_(std::move(endpoint)) {}
  ~BeastAdminServer() override { endpoint_->stop(); }
  uint16_t port() const override { return endpoint_->port(); }
  void stop() override { endpoint_->stop(); }

 private:
  std::shared_ptr<Endpoint> endpoint_;
};

}  // namespace

Result<std::unique_ptr<AdminServer>> AdminServer::start(asio::io_context& io, AdminOptions options) {
  auto endpoint = std::make_shared<Endpoint>(io, std::move(options));
  RECGPT_RETURN_IF_ERROR(endpoint->bind());
  endpoint->run();
  return std::unique_ptr<AdminServer>(std::make_unique<BeastAdminServer>(std::move(endpoint)));
}

}  // namespace recgpt::admin
