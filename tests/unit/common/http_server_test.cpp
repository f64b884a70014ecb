// The API server against a real client (curl): whole responses over keep-alive, Server-Sent Events, the body,
// header and connection limits answered in OpenAI's error shape, malformed HTTP, a client that hangs up while
// its request is worked on, and a graceful drain. The io_context runs on its own thread; every wait is bounded.
#include "common/http/http_server.h"

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "tests/support/curl.h"

namespace recgpt::http {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::curl;
using testing::CurlReply;
using testing::finish_curl;
using testing::local_url;
using testing::start_curl;

// Waits on the io thread until `done` or the time passes (a handler that works slowly).
asio::awaitable<void> sleep_until(std::function<bool()> done, milliseconds most) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (auto end = std::chrono::steady_clock::now() + most; !done() && std::chrono::steady_clock::now() < end;) {
    timer.expires_after(milliseconds(10));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

struct RunningServer {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::unique_ptr<Server> server;
  std::thread thread;
  std::atomic<int> gone_noticed = 0;
  std::atomic<bool> release_slow = false;

  explicit RunningServer(ServerOptions options = {}) {
    auto started = Server::start(io, options, [this](Exchange& exchange) { return handle(exchange); });
    REQUIRE(started.is_ok());
    server = std::move(started).value();
    thread = std::thread([this] { io.run(); });
  }
  ~RunningServer() {
    asio::post(io, [this] {
      server.reset();
      io.stop();
    });
    thread.join();
  }
  uint16_t port() const { return server->port(); }

  // Runs `call` on the io thread and waits for it.
  template <typename F>
  auto on_io(F call) {
    std::packaged_task<decltype(call())()> task(call);
    auto result = task.get_future();
    asio::post(io, [&task] { task(); });
    return result.get();
  }

  asio::awaitable<void> handle(Exchange& exchange) {
    const Request& request = exchange.request();
    if (request.path == "/echo") {
      Response response;
      response.content_type = "text/plain";
      response.body = request.method + " " + request.body + " " + std::string(request.header("x-test"));
      co_await exchange.respond(response);
    } else if (request.path == "/events") {
      co_await exchange.start_events();
      for (int i = 0; i < 3; ++i) co_await exchange.event("{\"n\":" + std::to_string(i) + "}");
      co_await exchange.event("[DONE]");
    } else if (request.path == "/slow") {  // answers when released, or early when the client hangs up
      bool gone = false;
      exchange.on_client_gone([this, &gone] {
        gone = true;
        ++gone_noticed;
      });
      co_await sleep_until([&] { return gone || release_slow.load(); }, milliseconds(8000));
      if (!gone) {
        Response response;  // named: GCC 12 mishandles a braced temporary as a coroutine argument
        response.content_type = "text/plain";
        response.body = "slow done";
        co_await exchange.respond(std::move(response));
      }
    }
    // anything else: no answer (the server says 500)
  }
};

TEST_CASE("the API server answers over keep-alive and streams events", "[http]") {
  RunningServer running;
  CurlReply echo = curl(local_url(running.port(), "/echo"), {"-d", "hello", "-H", "X-Test: yes"});
  CHECK(echo.status == 200);
  CHECK(echo.body == "POST hello yes\n");
  // Two requests in one curl run: the second reuses the connection (num_connects 0).
  CurlReply twice = curl(local_url(running.port(), "/echo"),
                         {"-o", "/dev/null", "-o", "/dev/null", "-w", "connects=%{num_connects}\n%{http_code}\n",
                          local_url(running.port(), "/echo")});
  CHECK_THAT(twice.body, Catch::Contains("connects=1\n200\nconnects=0\n"));

  CurlReply events = curl(local_url(running.port(), "/events"), {"-N"});
  CHECK(events.status == 200);
  CHECK(events.body == "data: {\"n\":0}\n\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n\n");

  CurlReply unanswered = curl(local_url(running.port(), "/nothing"));
  CHECK(unanswered.status == 500);
  CHECK_THAT(unanswered.body, Catch::Contains("\"type\":\"server_error\""));
}

TEST_CASE("the API server refuses what is over its limits and malformed HTTP, and keeps serving", "[http]") {
  ServerOptions options;
  options.max_body_bytes = 1000;
  options.max_header_bytes = 2048;
  RunningServer running(options);
  CurlReply big = curl(local_url(running.port(), "/echo"), {"-d", std::string(1001, 'x')});
  CHECK(big.status == 413);
  CHECK_THAT(big.body, Catch::Contains("\"code\":\"request_too_large\"") && Catch::Contains("1000 bytes"));
  CHECK(curl(local_url(running.port(), "/echo"), {"-H", "X-Big: " + std::string(3000, 'a')}).status == 431);

  auto raw = Subprocess::spawn({"/bin/bash", "-c",
                                "exec 3<>/dev/tcp/127.0.0.1/" + std::to_string(running.port()) +
                                    "; printf 'NOT HTTP AT ALL\\r\\n\\r\\n' >&3; timeout 5 cat <&3"});
  REQUIRE(raw.is_ok());
  auto status_line = raw->read_line(std::chrono::steady_clock::now() + seconds(10));
  REQUIRE(status_line.is_ok());
  CHECK_THAT(*status_line, Catch::StartsWith("HTTP/1.1 400"));
  (void)raw->wait(std::chrono::steady_clock::now() + seconds(10));

  CHECK(curl(local_url(running.port(), "/echo")).status == 200);
}

TEST_CASE("a client that hangs up is noticed while its request is still being worked on", "[http]") {
  RunningServer running;
  CurlReply cut = curl(local_url(running.port(), "/slow"), {"--max-time", "0.5"});
  CHECK(cut.status == 0);
  for (int i = 0; i < 200 && running.gone_noticed == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  CHECK(running.gone_noticed == 1);
  int active = 1;
  for (int i = 0; i < 200 && active > 0; ++i) {
    active = running.on_io([&] { return running.server->active_exchanges(); });
    std::this_thread::sleep_for(milliseconds(10));
  }
  CHECK(active == 0);
}

TEST_CASE("over the connection limit a client gets 503, a drain finishes the request in progress", "[http]") {
  ServerOptions options;
  options.max_connections = 1;
  RunningServer running(options);
  // Started here and finished on this thread (finish_curl below): Catch2's assertions are not thread-safe.
  Subprocess slow = start_curl(local_url(running.port(), "/slow"));
  for (int i = 0; i < 200 && running.on_io([&] { return running.server->active_exchanges(); }) == 0; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  CurlReply refused = curl(local_url(running.port(), "/echo"));
  CHECK(refused.status == 503);
  CHECK_THAT(refused.body, Catch::Contains("connection limit"));

  std::atomic<bool> drained = false;
  running.on_io([&] {
    running.server->drain(seconds(10), [&] { drained = true; });
    return 0;
  });
  CHECK(curl(local_url(running.port(), "/echo")).status == 0);  // no longer accepting
  CHECK_FALSE(drained);
  running.release_slow = true;
  const CurlReply slow_reply = finish_curl(slow);
  INFO("client gone noticed " << running.gone_noticed << " times");
  CHECK(slow_reply.status == 200);
  CHECK(slow_reply.body == "slow done\n");
  for (int i = 0; i < 200 && !drained; ++i) std::this_thread::sleep_for(milliseconds(10));
  CHECK(drained);
}

}  // namespace
}  // namespace recgpt::http
