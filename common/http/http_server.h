// An HTTP/1.1 server for APIs (the router's): keep-alive, bounded headers and bodies, a cap on concurrent
// connections, idle deadlines, whole responses or Server-Sent Events, client-disconnect notice, and a graceful
// drain. Runs on the caller's io_context as coroutines; Beast stays inside http_server.cpp.
//
// Threading: everything (handlers included) runs on the io_context's thread; call every method from it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace boost::asio {
class io_context;
}

namespace recgpt::http {

struct Request {
  std::string method;                                        // "GET", "POST", ...
  std::string target;                                        // as sent: path and query
  std::string path;                                          // target up to '?'
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  std::string body;
  std::string peer;  // "address:port" of the client

  // The first header of that (lower-case) name; empty when absent.
  std::string_view header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// One request being answered. A handler either respond()s once, or start_events() and then event()s (SSE:
// each `data: <payload>\n\n`, chunked), or returns without either (500).
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const Request& request() const = 0;
  virtual boost::asio::awaitable<Status> respond(Response response) = 0;
  // 200 with text/event-stream; kFailedPrecondition after respond() or a second start.
  virtual boost::asio::awaitable<Status> start_events() = 0;
  // One event, awaited until written; kUnavailable when the client is gone.
  virtual boost::asio::awaitable<Status> event(std::string_view data) = 0;
  // Whether the client closed its side (noticed while the handler works, not only when writing).
  virtual bool client_gone() const = 0;
  // `notice` runs once, on the io thread, when the client is noticed gone while this exchange is open (at once
  // if it already is). Replaces an earlier notice.
  virtual void on_client_gone(std::function<void()> notice) = 0;
};

using Handler = std::function<boost::asio::awaitable<void>(Exchange& exchange)>;

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: ephemeral (see Server::port)
  uint32_t max_header_bytes = 16 * 1024;
  uint64_t max_body_bytes = 8 << 20;
  int max_connections = 1024;                      // over it, a new connection gets 503 and is closed
  std::chrono::milliseconds idle_timeout{60000};   // keep-alive wait for the next request
  std::chrono::milliseconds read_timeout{30000};   // to receive one whole request
  std::chrono::milliseconds write_timeout{30000};  // to write one response or event
};

class Server {
 public:
  // Binds and starts accepting; kUnavailable naming the address when it cannot bind.
  static Result<std::unique_ptr<Server>> start(boost::asio::io_context& io, ServerOptions options, Handler handler);
  virtual ~Server() = default;  // stops accepting; exchanges in progress finish on their own
  virtual uint16_t port() const = 0;
  virtual int open_connections() const = 0;
  virtual int active_exchanges() const = 0;  // requests being answered
  // Graceful end: stops accepting; idle keep-alive connections close; requests in progress finish (no new
  // request is read on their connections). `drained` runs when none is left, or at `within` regardless.
  virtual void drain(std::chrono::milliseconds within, std::function<void()> drained) = 0;
  // Stops accepting and closes every connection now.
  virtual void stop() = 0;
};

}  // namespace recgpt::http
