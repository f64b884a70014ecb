#include "common/http/http_server.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <list>

namespace recgpt::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using asio::ip::tcp;

constexpr auto kDrainPoll = std::chrono::milliseconds(50);

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string json_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

// What the server itself answers (limits, overload, a handler that did not answer): OpenAI's error shape, which
// any JSON API client reads.
Response server_error(int status, const std::string& message, const std::string& code) {
  Response response;
  response.status = status;
  response.body = R"({"error":{"message":")" + json_escape(message) + R"(","type":")" +
                  (status >= 500 ? "server_error" : "invalid_request_error") + R"(","param":null,"code":")" + code +
                  "\"}}";
  return response;
}

bhttp::response<bhttp::string_body> to_beast(const Response& response, unsigned version, bool keep_alive) {
  bhttp::response<bhttp::string_body> out(static_cast<bhttp::status>(response.status), version);
  out.set(bhttp::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) out.set(name, value);
  out.keep_alive(keep_alive);
  out.body() = response.body;
  out.prepare_payload();
  return out;
}

// Shared by an exchange and its client watch, which may outlive it by a moment.
struct ClientState {
  bool gone = false;
  bool watch_finished = false;
  std::function<void()> notice;
  void mark_gone() {
    if (gone) return;
    gone = true;
    if (notice) std::exchange(notice, nullptr)();
  }
};

class Connection;

class ExchangeImpl final : public Exchange {
 public:
  ExchangeImpl(Connection& connection, Request request, unsigned version, bool keep_alive)
      : connection_(connection), request_(std::move(request)), version_(version), keep_alive_(keep_alive) {}

  const Request& request() const override { return request_; }
  asio::awaitable<Status> respond(Response response) override;
  asio::awaitable<Status> start_events() override;
  asio::awaitable<Status> event(std::string_view data) override;
  bool client_gone() const override { return client_->gone; }
  void on_client_gone(std::function<void()> notice) override {
    if (client_->gone) {
      notice();
      return;
    }
    client_->notice = std::move(notice);
  }

  // The outcome of a write: a failed one means the client is gone (and the connection is done).
  Status written(const boost::system::error_code& error) {
    if (!error) return Status::ok();
    broken_ = true;
    client_->mark_gone();
    return unavailable("the client is gone: " + error.message());
  }

  // After the handler: ends an event stream, or answers 500 when nothing was sent. False: close the connection.
  asio::awaitable<bool> finish();
  const std::shared_ptr<ClientState>& client() const { return client_; }

 private:
  Connection& connection_;
  Request request_;
  unsigned version_;
  bool keep_alive_;
  bool responded_ = false;
  bool streaming_ = false;
  bool broken_ = false;  // a write failed
  std::shared_ptr<ClientState> client_ = std::make_shared<ClientState>();
};

class Endpoint;

// One client connection: reads requests one at a time and hands each to the handler.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Endpoint> endpoint, tcp::socket socket);
  asio::awaitable<void> serve();
  void close() {
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }
  bool idle() const { return idle_; }
  beast::tcp_stream& stream() { return stream_; }
  const ServerOptions& options() const;

 private:
  asio::awaitable<void> watch_client(std::shared_ptr<ClientState> client, std::shared_ptr<asio::steady_timer> done);
  asio::awaitable<void> answer_error(const Response& response, unsigned version);

  std::shared_ptr<Endpoint> endpoint_;
  beast::tcp_stream stream_;
  std::string peer_;
  bool idle_ = true;
};

class Endpoint : public std::enable_shared_from_this<Endpoint> {
 public:
  Endpoint(asio::io_context& io, ServerOptions options, Handler handler)
      : io_(io), acceptor_(io), options_(std::move(options)), handler_(std::move(handler)) {}

  Status bind() {
    boost::system::error_code error;
    tcp::endpoint endpoint(asio::ip::make_address(options_.address, error), options_.port);
    if (!error) acceptor_.open(endpoint.protocol(), error);
    if (!error) acceptor_.set_option(tcp::acceptor::reuse_address(true), error);
    if (!error) acceptor_.bind(endpoint, error);
    if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
    if (!error) port_ = acceptor_.local_endpoint().port();
    if (error) {
      return unavailable("the HTTP server cannot listen on " + options_.address + ":" + std::to_string(options_.port) +
                         ": " + error.message());
    }
    return Status::ok();
  }

  void run() {
    asio::co_spawn(
        io_, [self = shared_from_this()] { return self->accept_loop(); }, asio::detached);
  }

  void stop_accepting() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }

  void stop() {
    stop_accepting();
    draining_ = true;
    for (auto& weak : connections_) {
      if (auto connection = weak.lock()) connection->close();
    }
  }

  void drain(std::chrono::milliseconds within, std::function<void()> drained) {
    draining_ = true;
    stop_accepting();
    for (auto& weak : connections_) {
      auto connection = weak.lock();
      if (connection && connection->idle()) connection->close();
    }
    asio::co_spawn(
        io_,
        [self = shared_from_this(), deadline = std::chrono::steady_clock::now() + within,
         drained = std::move(drained)]() -> asio::awaitable<void> {
          asio::steady_timer timer(self->io_);
          while (self->active_exchanges_ > 0 && std::chrono::steady_clock::now() < deadline) {
            timer.expires_after(kDrainPoll);
            co_await timer.async_wait(asio::use_awaitable);
          }
          drained();
        },
        asio::detached);
  }

  uint16_t port() const { return port_; }
  int open_connections() const { return open_connections_; }
  int active_exchanges() const { return active_exchanges_; }
  bool draining() const { return draining_; }
  const ServerOptions& options() const { return options_; }
  const Handler& handler() const { return handler_; }
  void exchange_started() { ++active_exchanges_; }
  void exchange_ended() { --active_exchanges_; }
  void connection_ended() {
    --open_connections_;
    connections_.remove_if([](const std::weak_ptr<Connection>& weak) { return weak.expired(); });
  }

 private:
  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    while (acceptor_.is_open()) {
      boost::system::error_code error;
      tcp::socket socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, error));
      if (error) continue;  // closed (the loop ends) or a transient accept error
      ++open_connections_;
      auto connection = std::make_shared<Connection>(self, std::move(socket));
      connections_.push_back(connection);
      asio::co_spawn(
          io_, [connection] { return connection->serve(); }, asio::detached);
    }
  }

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  const ServerOptions options_;
  const Handler handler_;
  uint16_t port_ = 0;
  int open_connections_ = 0;
  int active_exchanges_ = 0;
  bool draining_ = false;
  std::list<std::weak_ptr<Connection>> connections_;
};

Connection::Connection(std::shared_ptr<Endpoint> endpoint, tcp::socket socket)
    : endpoint_(std::move(endpoint)), stream_(std::move(socket)) {
  boost::system::error_code error;
  const tcp::endpoint remote = stream_.socket().remote_endpoint(error);
  peer_ = error ? "unknown" : remote.address().to_string() + ":" + std::to_string(remote.port());
  // Stream events are small writes each a client waits for: Nagle's algorithm would hold them back.
  stream_.socket().set_option(tcp::no_delay(true), error);
}

const ServerOptions& Connection::options() const { return endpoint_->options(); }

asio::awaitable<void> Connection::answer_error(const Response& response, unsigned version) {
  auto message = to_beast(response, version, false);
  stream_.expires_after(options().write_timeout);
  boost::system::error_code ignored;
  co_await bhttp::async_write(stream_, message, asio::redirect_error(asio::use_awaitable, ignored));
}

asio::awaitable<void> Connection::serve() {
  auto self = shared_from_this();
  const ServerOptions& options = endpoint_->options();
  beast::flat_buffer buffer;
  if (endpoint_->open_connections() > options.max_connections) {
    co_await answer_error(server_error(503, "the server is at its connection limit; retry later", "overloaded"), 11);
  } else {
    while (!endpoint_->draining()) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(options.max_header_bytes);
      parser.body_limit(options.max_body_bytes);
      boost::system::error_code error;
      idle_ = true;
      stream_.expires_after(options.idle_timeout);
      co_await bhttp::async_read_header(stream_, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
      idle_ = false;
      if (!error && !parser.is_done()) {
        stream_.expires_after(options.read_timeout);
        co_await bhttp::async_read(stream_, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
      }
      if (error == bhttp::error::body_limit) {
        co_await answer_error(
            server_error(413,
                         "the request body is over the limit of " + std::to_string(options.max_body_bytes) + " bytes",
                         "request_too_large"),
            11);
        break;
      }
      if (error == bhttp::error::header_limit) {
        co_await answer_error(
            server_error(
                431, "the request headers are over the limit of " + std::to_string(options.max_header_bytes) + " bytes",
                "headers_too_large"),
            11);
        break;
      }
      if (error) {
        const bool malformed = error.category() == bhttp::make_error_code(bhttp::error::end_of_stream).category() &&
                               error != bhttp::error::end_of_stream && error != bhttp::error::partial_message;
        if (malformed)
          co_await answer_error(server_error(400, "malformed HTTP request: " + error.message(), "bad_http"), 11);
        break;  // closed, timed out, or not HTTP
      }
      bhttp::request<bhttp::string_body> message = parser.release();
      Request request;
      request.method = std::string(message.method_string());
      request.target = std::string(message.target());
      request.path = request.target.substr(0, request.target.find('?'));
      for (const auto& field : message) request.headers.emplace_back(lower(field.name_string()), field.value());
      request.body = std::move(message.body());
      request.peer = peer_;
      ExchangeImpl exchange(*this, std::move(request), message.version(), message.keep_alive());

      // Notice a client that hangs up while the handler works (it reads nothing more until the handler ends).
      auto watch_done =
          std::make_shared<asio::steady_timer>(stream_.get_executor(), std::chrono::steady_clock::time_point::max());
      asio::co_spawn(stream_.get_executor(), watch_client(exchange.client(), watch_done), asio::detached);
      endpoint_->exchange_started();
      co_await endpoint_->handler()(exchange);
      exchange.client()->notice = nullptr;  // the handler's state is gone: a late notice must not reach it
      const bool keep = co_await exchange.finish();
      endpoint_->exchange_ended();
      // Stop the watch and wait for it to leave the socket before reading again.
      boost::system::error_code ignored;
      stream_.socket().cancel(ignored);
      if (!exchange.client()->watch_finished)
        co_await watch_done->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      if (!keep || exchange.client_gone()) break;
    }
  }
  boost::system::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream_.close();
  endpoint_->connection_ended();
}

asio::awaitable<void> Connection::watch_client(std::shared_ptr<ClientState> client,
                                               std::shared_ptr<asio::steady_timer> done) {
  auto self = shared_from_this();
  boost::system::error_code error;
  co_await stream_.socket().async_wait(tcp::socket::wait_read, asio::redirect_error(asio::use_awaitable, error));
  if (!error) {
    char byte = 0;
    boost::system::error_code peek_error;
    const size_t peeked = stream_.socket().receive(asio::buffer(&byte, 1), tcp::socket::message_peek, peek_error);
    if (peek_error || peeked == 0) client->mark_gone();  // else: a pipelined request, read after this one
  } else if (error != asio::error::operation_aborted) {
    client->mark_gone();
  }
  client->watch_finished = true;
  done->cancel();
}

asio::awaitable<Status> ExchangeImpl::respond(Response response) {
  if (responded_ || streaming_) co_return failed_precondition("this request was answered already");
  responded_ = true;
  auto message = to_beast(response, version_, keep_alive_);
  connection_.stream().expires_after(connection_.options().write_timeout);
  boost::system::error_code error;
  co_await bhttp::async_write(connection_.stream(), message, asio::redirect_error(asio::use_awaitable, error));
  co_return written(error);
}

asio::awaitable<Status> ExchangeImpl::start_events() {
  if (responded_ || streaming_) co_return failed_precondition("this request was answered already");
  streaming_ = true;
  bhttp::response<bhttp::empty_body> header(bhttp::status::ok, version_);
  header.set(bhttp::field::content_type, "text/event-stream");
  header.set(bhttp::field::cache_control, "no-cache");
  header.keep_alive(keep_alive_);
  header.chunked(true);
  bhttp::response_serializer<bhttp::empty_body> serializer(header);
  connection_.stream().expires_after(connection_.options().write_timeout);
  boost::system::error_code error;
  co_await bhttp::async_write_header(connection_.stream(), serializer,
                                     asio::redirect_error(asio::use_awaitable, error));
  co_return written(error);
}

asio::awaitable<Status> ExchangeImpl::event(std::string_view data) {
  if (!streaming_) co_return failed_precondition("event() before start_events()");
  if (broken_) co_return unavailable("the client is gone");
  std::string framed = "data: ";
  framed += data;
  framed += "\n\n";
  connection_.stream().expires_after(connection_.options().write_timeout);
  boost::system::error_code error;
  co_await asio::async_write(connection_.stream(), bhttp::make_chunk(asio::buffer(framed)),
                             asio::redirect_error(asio::use_awaitable, error));
  co_return written(error);
}

asio::awaitable<bool> ExchangeImpl::finish() {
  if (broken_) co_return false;
  if (streaming_) {
    connection_.stream().expires_after(connection_.options().write_timeout);
    boost::system::error_code error;
    co_await asio::async_write(connection_.stream(), bhttp::make_chunk_last(),
                               asio::redirect_error(asio::use_awaitable, error));
    co_return !error && keep_alive_;
  }
  if (!responded_) {
    Response unanswered = server_error(500, "the request was not answered", "internal");
    const Status sent = co_await respond(std::move(unanswered));
    co_return sent.is_ok() && keep_alive_;
  }
  co_return keep_alive_;
}

class BeastServer final : public Server {
 public:
  explicit BeastServer(std::shared_ptr<Endpoint> endpoint) : endpoint_(std::move(endpoint)) {}
  ~BeastServer() override { endpoint_->stop_accepting(); }
  uint16_t port() const override { return endpoint_->port(); }
  int open_connections() const override { return endpoint_->open_connections(); }
  int active_exchanges() const override { return endpoint_->active_exchanges(); }
  void drain(std::chrono::milliseconds within, std::function<void()> drained) override {
    endpoint_->drain(within, std::move(drained));
  }
  void stop() override { endpoint_->stop(); }

 private:
  std::shared_ptr<Endpoint> endpoint_;
};

}  // namespace

std::string_view Request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

Result<std::unique_ptr<Server>> Server::start(asio::io_context& io, ServerOptions options, Handler handler) {
  auto endpoint = std::make_shared<Endpoint>(io, std::move(options), std::move(handler));
  RECGPT_RETURN_IF_ERROR(endpoint->bind());
  endpoint->run();
  return std::unique_ptr<Server>(std::make_unique<BeastServer>(std::move(endpoint)));
}

}  // namespace recgpt::http
