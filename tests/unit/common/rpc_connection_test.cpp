// Control-plane connections over real TCP on 127.0.0.1, both ends in this process on one io_context: calls and
// replies by request id, deadlines, a peer that goes away, and frames from outside that are wrong (the server
// closes that connection with the reason and keeps accepting others). Every test runs the io_context for a
// bounded time.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include "common/rpc/connection.h"

namespace recgpt::rpc {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using std::chrono::milliseconds;

constexpr milliseconds kTestBudget(10000);  // the io_context runs at most this long per test

// A server on an ephemeral port that answers every reserve_kv with no_room (echoing one token count), ignores
// cancel frames, and records what it saw.
struct TestServer {
  explicit TestServer(asio::io_context& io) : acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    asio::co_spawn(io, accept_loop(), asio::detached);
  }

  uint16_t port() const { return acceptor.local_endpoint().port(); }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code error;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, error));
      if (error) co_return;
      auto connection = Connection::make(std::move(socket), "test client");
      connections.push_back(connection);
      std::weak_ptr<Connection> weak = connection;
      connection->start(
          [this, weak](control::Envelope envelope) {
            received_ids.push_back(envelope.request_id());
            auto self = weak.lock();
            if (self == nullptr || !envelope.has_reserve_kv()) return;
            control::Envelope reply;
            reply.set_request_id(envelope.request_id());
            reply.mutable_reserve_kv_reply()->mutable_no_room()->set_needed_blocks(
                static_cast<uint32_t>(envelope.reserve_kv().token_ids_size()));
            REQUIRE(self->send(reply).is_ok());
          },
          [this](const Status& why) { close_reasons.push_back(why); });
    }
  }

  tcp::acceptor acceptor;
  std::vector<std::shared_ptr<Connection>> connections;
  std::vector<uint64_t> received_ids;
  std::vector<Status> close_reasons;
};

control::Envelope reserve(int tokens) {
  control::Envelope envelope;
  for (int i = 0; i < tokens; ++i) envelope.mutable_reserve_kv()->add_token_ids(static_cast<uint32_t>(i));
  return envelope;
}

// Runs `test` on the io_context until it finishes (or the budget runs out: the test then fails).
void run(asio::io_context& io, std::function<asio::awaitable<void>()> test) {
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await test();
        finished = true;
        io.stop();
      },
      asio::detached);
  io.run_for(kTestBudget);
  REQUIRE(finished);
}

asio::awaitable<std::shared_ptr<Connection>> connect_started(uint16_t port) {
  auto connected = co_await connect("127.0.0.1", port, Clock::now() + milliseconds(2000));
  REQUIRE(connected.is_ok());
  (*connected)->start([](control::Envelope) {}, [](const Status&) {});
  co_return *connected;
}

TEST_CASE("a call gets the reply carrying its request id, and concurrent calls are told apart", "[rpc]") {
  asio::io_context io;
  TestServer server(io);
  run(io, [&]() -> asio::awaitable<void> {
    auto client = co_await connect_started(server.port());
    auto first = co_await client->call(reserve(3), Clock::now() + milliseconds(2000));
    REQUIRE(first.is_ok());
    CHECK(first->reserve_kv_reply().no_room().needed_blocks() == 3);
    auto second = co_await client->call(reserve(5), Clock::now() + milliseconds(2000));
    REQUIRE(second.is_ok());
    CHECK(second->reserve_kv_reply().no_room().needed_blocks() == 5);
    CHECK(second->request_id() != first->request_id());
  });
}

TEST_CASE("frames leave in the order they were sent", "[rpc]") {
  asio::io_context io;
  TestServer server(io);
  run(io, [&]() -> asio::awaitable<void> {
    auto client = co_await connect_started(server.port());
    control::Envelope cancel;
    cancel.mutable_cancel()->set_reason("test");
    for (uint64_t id = 1; id <= 200; ++id) {
      cancel.set_request_id(id);
      REQUIRE(client->send(cancel).is_ok());
    }
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (int i = 0; i < 200 && server.received_ids.size() < 200; ++i) {
      wait.expires_after(milliseconds(10));
      co_await wait.async_wait(asio::use_awaitable);
    }
  });
  REQUIRE(server.received_ids.size() == 200);
  for (size_t i = 0; i < 200; ++i) CHECK(server.received_ids[i] == i + 1);
}

TEST_CASE("a call nobody answers ends at its deadline", "[rpc]") {
  asio::io_context io;
  TestServer server(io);
  run(io, [&]() -> asio::awaitable<void> {
    auto client = co_await connect_started(server.port());
    control::Envelope cancel;  // the server never answers these
    cancel.mutable_cancel()->set_reason("no answer");
    const auto start = Clock::now();
    auto reply = co_await client->call(cancel, start + milliseconds(200));
    REQUIRE_FALSE(reply.is_ok());
    CHECK(reply.status().code() == StatusCode::kDeadlineExceeded);
    CHECK(Clock::now() - start < milliseconds(2000));
    CHECK(client->is_open());  // a missed deadline is the call's, not the connection's
  });
}

TEST_CASE("a call abandoned while it waits returns the reason at once, other calls go on", "[rpc]") {
  asio::io_context io;
  TestServer server(io);
  run(io, [&]() -> asio::awaitable<void> {
    auto client = co_await connect_started(server.port());
    client->abandon_call(12345, failed_precondition("no such call"));  // nothing waits under it: no effect
    control::Envelope cancel;                                          // the server never answers these
    cancel.mutable_cancel()->set_reason("no answer");
    const uint64_t id = client->new_request_id();
    asio::steady_timer later(co_await asio::this_coro::executor, milliseconds(100));
    later.async_wait([client, id](boost::system::error_code) {
      client->abandon_call(id, failed_precondition("the caller gave up"));
    });
    const auto start = Clock::now();
    auto reply = co_await client->call(id, cancel, start + milliseconds(8000));
    REQUIRE_FALSE(reply.is_ok());
    CHECK(reply.status().code() == StatusCode::kFailedPrecondition);
    CHECK(reply.status().message() == "the caller gave up");
    CHECK(Clock::now() - start < milliseconds(4000));  // well before the call's own deadline
    REQUIRE(server.received_ids.size() == 1);
    CHECK(server.received_ids[0] == id);  // the call went out under the caller's id
    CHECK(client->is_open());
    auto next = co_await client->call(reserve(2), Clock::now() + milliseconds(2000));
    REQUIRE(next.is_ok());
    CHECK(next->reserve_kv_reply().no_room().needed_blocks() == 2);
  });
}

TEST_CASE("a connection closed while its frames are being written ends cleanly", "[rpc]") {
  asio::io_context io;
  TestServer server(io);
  run(io, [&]() -> asio::awaitable<void> {
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (int round = 0; round < 20; ++round) {
      auto client = co_await connect_started(server.port());
      control::Envelope cancel;
      cancel.mutable_cancel()->set_reason("written, then closed");
      for (int i = 0; i < 3; ++i) REQUIRE(client->send(cancel).is_ok());  // the write starts at once
      client->close(unavailable("closed while writing"));                 // before its completion runs
      CHECK_FALSE(client->is_open());
      CHECK_FALSE(client->send(cancel).is_ok());
      wait.expires_after(milliseconds(5));
      co_await wait.async_wait(asio::use_awaitable);  // the write's completion runs on the closed connection
    }
  });
  CHECK(server.close_reasons.size() == 20);  // the server saw each one end (and kept accepting)
}

TEST_CASE("calls in flight fail when the peer closes the connection", "[rpc]") {
  asio::io_context io;
  TestServer server(io);
  run(io, [&]() -> asio::awaitable<void> {
    auto client = co_await connect_started(server.port());
    REQUIRE((co_await client->call(reserve(1), Clock::now() + milliseconds(2000))).is_ok());
    REQUIRE(server.connections.size() == 1);
    server.connections[0]->close(unavailable("the test server goes away"));
    control::Envelope cancel;
    cancel.mutable_cancel()->set_reason("pending");
    auto reply = co_await client->call(cancel, Clock::now() + milliseconds(5000));
    REQUIRE_FALSE(reply.is_ok());
    CHECK(reply.status().code() == StatusCode::kUnavailable);
    CHECK_FALSE(client->is_open());
  });
}

// Writes raw bytes as a client, then checks the server closed that connection for `reason` and still serves.
void expect_refused(const std::string& raw, const std::string& reason) {
  asio::io_context io;
  TestServer server(io);
  run(io, [&]() -> asio::awaitable<void> {
    tcp::socket raw_socket(co_await asio::this_coro::executor);
    co_await raw_socket.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()),
                                      asio::use_awaitable);
    co_await asio::async_write(raw_socket, asio::buffer(raw), asio::use_awaitable);
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (int i = 0; i < 200 && server.close_reasons.empty(); ++i) {
      wait.expires_after(milliseconds(10));
      co_await wait.async_wait(asio::use_awaitable);
    }
    auto client = co_await connect_started(server.port());  // the server keeps serving
    auto reply = co_await client->call(reserve(2), Clock::now() + milliseconds(2000));
    CHECK(reply.is_ok());
  });
  REQUIRE(server.close_reasons.size() == 1);
  INFO(server.close_reasons[0].to_string());
  CHECK_THAT(server.close_reasons[0].message(), Catch::Contains(reason));
}

TEST_CASE("an oversized frame closes that connection with the reason, the server keeps serving", "[rpc]") {
  expect_refused(std::string("\xff\xff\xff\x7f", 4), "over the limit");
}

TEST_CASE("a malformed frame closes that connection with the reason, the server keeps serving", "[rpc]") {
  expect_refused(std::string("\x08\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff", 12), "not a control envelope");
}

TEST_CASE("connecting to a port nobody listens on fails at once, not at the deadline", "[rpc]") {
  asio::io_context io;
  uint16_t closed_port = 0;
  {
    tcp::acceptor probe(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    closed_port = probe.local_endpoint().port();
  }
  run(io, [&]() -> asio::awaitable<void> {
    auto connected = co_await connect("127.0.0.1", closed_port, Clock::now() + milliseconds(5000));
    REQUIRE_FALSE(connected.is_ok());
    CHECK(connected.status().code() == StatusCode::kUnavailable);
  });
}

}  // namespace
}  // namespace recgpt::rpc
