#include "common/rpc/listener.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace recgpt::rpc {

namespace asio = boost::asio;
using asio::ip::tcp;

Result<std::shared_ptr<Listener>> Listener::open(asio::io_context& io, const std::string& address, uint16_t port) {
  std::shared_ptr<Listener> listener(new Listener(io));
  boost::system::error_code error;
  tcp::endpoint endpoint(asio::ip::make_address(address, error), port);
  tcp::acceptor& acceptor = listener->acceptor_;
  if (!error) acceptor.open(endpoint.protocol(), error);
  if (!error) acceptor.set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) return unavailable("cannot listen on " + address + ":" + std::to_string(port) + ": " + error.message());
  listener->port_ = acceptor.local_endpoint().port();
  return listener;
}

void Listener::run(std::function<void(std::shared_ptr<Connection>)> on_connection) {
  asio::co_spawn(
      acceptor_.get_executor(),
      [self = shared_from_this(), on_connection = std::move(on_connection)] {
        return self->accept_loop(on_connection);
      },
      asio::detached);
}

void Listener::close() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

asio::awaitable<void> Listener::accept_loop(std::function<void(std::shared_ptr<Connection>)> on_connection) {
  auto self = shared_from_this();
  while (acceptor_.is_open()) {
    boost::system::error_code error;
    tcp::socket socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, error));
    if (error) continue;  // closed (the loop ends) or a transient accept error
    std::string peer = "client";
    boost::system::error_code ignored;
    auto remote = socket.remote_endpoint(ignored);
    if (!ignored) peer = remote.address().to_string() + ":" + std::to_string(remote.port());
    on_connection(Connection::make(std::move(socket), peer));
  }
}

control::Envelope error_frame(uint64_t request_id, const Status& status) {
  control::Envelope envelope;
  envelope.set_request_id(request_id);
  envelope.mutable_error()->set_code(std::string(status_code_name(status.code())));
  envelope.mutable_error()->set_message(status.message());
  return envelope;
}

Status status_of(const control::Error& error) {
  for (int code = 1; code <= static_cast<int>(StatusCode::kInternal); ++code) {
    if (status_code_name(static_cast<StatusCode>(code)) == error.code()) {
      return {static_cast<StatusCode>(code), error.message()};
    }
  }
  return unavailable(error.message());
}

Status check_peer_hello(const control::Hello& hello, const std::string& model_fingerprint) {
  if (hello.protocol_version() < kOldestPeerProtocolVersion || hello.protocol_version() > kProtocolVersion) {
    return failed_precondition("protocol version " + std::to_string(hello.protocol_version()) + ", this node speaks " +
                               std::to_string(kOldestPeerProtocolVersion) + " to " + std::to_string(kProtocolVersion));
  }
  if (!hello.model_fingerprint().empty() && hello.model_fingerprint() != model_fingerprint) {
    return failed_precondition("model fingerprint " + hello.model_fingerprint() + " differs from this node's " +
                               model_fingerprint);
  }
  return Status::ok();
}

}  // namespace recgpt::rpc
