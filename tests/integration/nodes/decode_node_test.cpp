// `recgpt decode` as a real process on 127.0.0.1, driven over the control protocol by this test: handshake
// refusals, reservations and no room, cancel, a client that goes away, malformed frames; the KV pool is read
// back from /metrics (curl) after each, and must be whole again. Every wait has a deadline.
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "common/rpc/listener.h"
#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {

// A decode node over tcp.
struct DecodeNode : Node {
  explicit DecodeNode(const TinyModel& model) : Node("decode", model, "tcp") {}
  bool pool_whole_again() const { return shows_used(0); }
};

control::Envelope hello(const std::string& fingerprint, uint32_t version = rpc::kProtocolVersion) {
  control::Envelope envelope;
  envelope.mutable_hello()->set_role(control::ROLE_ROUTER);
  envelope.mutable_hello()->set_node_id("test-driver");
  envelope.mutable_hello()->set_model_fingerprint(fingerprint);
  envelope.mutable_hello()->set_protocol_version(version);
  return envelope;
}

control::Envelope reserve(int tokens, uint32_t max_tokens, uint64_t deadline_unix_ms = 0) {
  control::Envelope envelope;
  for (int i = 0; i < tokens; ++i) envelope.mutable_reserve_kv()->add_token_ids(static_cast<uint32_t>(5 + i % 100));
  envelope.mutable_reserve_kv()->set_max_tokens(max_tokens);
  envelope.mutable_reserve_kv()->set_deadline_unix_ms(deadline_unix_ms);
  return envelope;
}

// Runs `body` against the node on a fresh io_context, within a budget.
void drive(uint16_t port, const std::function<asio::awaitable<void>(std::shared_ptr<rpc::Connection>)>& body) {
  asio::io_context io;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto connection = co_await rpc::connect("127.0.0.1", port, Clock::now() + seconds(5));
        REQUIRE(connection.is_ok());
        (*connection)->start([](control::Envelope) {}, [](const Status&) {});
        co_await body(*connection);
        (*connection)->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(60));
  REQUIRE(finished);
}

TEST_CASE("a decode node refuses a handshake of another protocol version or model, and keeps serving",
          "[nodes][decode]") {
  TinyModel model;
  DecodeNode node(model);
  // Newer than this node, or older than the oldest it takes: refused. The oldest it takes: a rolling upgrade's
  // router, greeted.
  for (uint32_t version : {99u, rpc::kProtocolVersion + 1, rpc::kOldestPeerProtocolVersion - 1}) {
    drive(node.port, [&](std::shared_ptr<rpc::Connection> connection) -> asio::awaitable<void> {
      auto reply = co_await connection->call(hello(model.fingerprint, version), Clock::now() + seconds(10));
      REQUIRE(reply.is_ok());
      CHECK(reply->has_error());
      CHECK_THAT(reply->error().message(), Catch::Contains("protocol version " + std::to_string(version)));
    });
  }
  drive(node.port, [&](std::shared_ptr<rpc::Connection> connection) -> asio::awaitable<void> {
    auto reply = co_await connection->call(hello(model.fingerprint, rpc::kOldestPeerProtocolVersion),
                                           Clock::now() + seconds(10));
    REQUIRE(reply.is_ok());
    CHECK(reply->has_hello());
  });
  drive(node.port, [&](std::shared_ptr<rpc::Connection> connection) -> asio::awaitable<void> {
    auto reply = co_await connection->call(hello("0123456789abcdef"), Clock::now() + seconds(10));
    REQUIRE(reply.is_ok());
    CHECK(reply->error().code() == "failed_precondition");
    CHECK_THAT(reply->error().message(), Catch::Contains("fingerprint"));
  });
  drive(node.port, [&](std::shared_ptr<rpc::Connection> connection) -> asio::awaitable<void> {
    auto reply = co_await connection->call(hello(model.fingerprint), Clock::now() + seconds(10));
    REQUIRE(reply.is_ok());
    REQUIRE(reply->has_hello());
    CHECK(reply->hello().role() == control::ROLE_DECODE);
    CHECK(reply->hello().model_fingerprint() == model.fingerprint);
    CHECK(reply->hello().kv_layout().block_size() == 16);
    CHECK_FALSE(reply->hello().transfer_endpoint().empty());
    CHECK_FALSE(reply->hello().kv_region_key().empty());
  });
}

TEST_CASE(
    "decode node reservations: blocks for prompt and budget, no room at once, cancel and a vanished "
    "client return every block (the prompt blocks of a prefill attempt it named after their deadline)",
    "[nodes][decode]") {
  TinyModel model;
  DecodeNode node(model);
  drive(node.port, [&](std::shared_ptr<rpc::Connection> connection) -> asio::awaitable<void> {
    auto greeted = co_await connection->call(hello(model.fingerprint), Clock::now() + seconds(10));
    REQUIRE(greeted.is_ok());
    auto reserved = co_await connection->call(reserve(40, 8), Clock::now() + seconds(10));
    REQUIRE(reserved.is_ok());
    REQUIRE(reserved->reserve_kv_reply().has_reservation());
    CHECK(reserved->reserve_kv_reply().reservation().block_ids_size() == 3);  // 48 tokens
    CHECK(node.shows_used(3));
    auto refused = co_await connection->call(reserve(20000, 8), Clock::now() + seconds(10));
    REQUIRE(refused.is_ok());
    CHECK(refused->reserve_kv_reply().has_no_room());
    control::Envelope cancel;
    cancel.set_request_id(reserved->request_id());
    cancel.mutable_cancel()->set_reason("test");
    REQUIRE(connection->send(cancel).is_ok());
    CHECK(node.pool_whole_again());

    control::Envelope start;
    start.mutable_start_decode()->set_reservation_id(12345);
    auto unknown = co_await connection->call(start, Clock::now() + seconds(10));
    REQUIRE(unknown.is_ok());
    CHECK(unknown->error().code() == "not_found");

    auto second =
        co_await connection->call(reserve(70, 30, unix_ms_from_now(milliseconds(1500))), Clock::now() + seconds(10));
    REQUIRE(second.is_ok());
    INFO(second->DebugString());
    REQUIRE(second->reserve_kv_reply().has_reservation());
    INFO("used blocks " << node.used_blocks());
    CHECK(node.shows_used(7));
    // Its client names a prefill attempt into it, by an endpoint nobody can tell dead or alive.
    control::Envelope attempt;
    attempt.mutable_prefill_attempt()->set_reservation_id(second->reserve_kv_reply().reservation().reservation_id());
    attempt.mutable_prefill_attempt()->set_attempt(1);
    attempt.mutable_prefill_attempt()->set_prefill_transfer_endpoint("not an endpoint");
    REQUIRE(connection->send(attempt).is_ok());
    auto third = co_await connection->call(reserve(40, 8), Clock::now() + seconds(10));
    REQUIRE(third.is_ok());
    REQUIRE(third->reserve_kv_reply().has_reservation());
    CHECK(node.shows_used(10));
  });  // the connection closes with two live reservations
  // The attempt its client named may still write the second one's 5 prompt blocks: they stay fenced until its
  // deadline plus the grace (decode_core.h). Nothing can write the third one's: every block of both comes back.
  CHECK(node.shows_used(5));
  CHECK(node.metric("recgpt_decode_kv_blocks_fenced\\{.*\\}") == 5);
  CHECK(node.pool_whole_again());
}

TEST_CASE("a decode node reports its load to the peers it greeted, about every second", "[nodes][decode]") {
  TinyModel model;
  DecodeNode node(model);
  asio::io_context io;
  std::vector<control::LoadReport> reports;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto connection = co_await rpc::connect("127.0.0.1", node.port, Clock::now() + seconds(5));
        REQUIRE(connection.is_ok());
        (*connection)
            ->start(
                [&](control::Envelope envelope) {
                  if (envelope.has_load_report()) reports.push_back(envelope.load_report());
                },
                [](const Status&) {});
        auto greeted = co_await (*connection)->call(hello(model.fingerprint), Clock::now() + seconds(10));
        REQUIRE(greeted.is_ok());
        auto reserved = co_await (*connection)->call(reserve(40, 8), Clock::now() + seconds(10));
        REQUIRE(reserved.is_ok());
        asio::steady_timer wait(co_await asio::this_coro::executor);
        for (int i = 0; i < 100 && reports.size() < 2; ++i) {
          wait.expires_after(milliseconds(50));
          co_await wait.async_wait(asio::use_awaitable);
        }
        (*connection)->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(30));
  REQUIRE(finished);
  REQUIRE(reports.size() >= 2);
  CHECK(reports.back().kv_blocks_used() == 3);  // the reservation above
  CHECK(reports.back().kv_blocks_free() > 0);
  CHECK(reports.back().queue_depth() == 1);
}

TEST_CASE("a malformed frame closes only its connection, the decode node keeps serving", "[nodes][decode]") {
  TinyModel model;
  DecodeNode node(model);
  {
    asio::io_context io;
    asio::ip::tcp::socket raw(io);
    raw.connect({asio::ip::make_address("127.0.0.1"), node.port});
    const std::string garbage("\x08\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff", 12);
    asio::write(raw, asio::buffer(garbage));
    char byte;
    boost::system::error_code error;
    raw.read_some(asio::buffer(&byte, 1), error);  // the node closes it
    CHECK(error);
  }
  drive(node.port, [&](std::shared_ptr<rpc::Connection> connection) -> asio::awaitable<void> {
    auto reply = co_await connection->call(hello(model.fingerprint), Clock::now() + seconds(10));
    REQUIRE(reply.is_ok());
    CHECK(reply->has_hello());
  });
}

}  // namespace
}  // namespace recgpt::testing
