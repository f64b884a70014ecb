// `recgpt prefill` as a real process: a handshake of another model is refused, and a request whose decode KV
// layout does not match this node's is refused naming the field, while the node keeps serving (the next,
// correct request succeeds).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "common/rpc/listener.h"
#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {

TEST_CASE("a prefill node refuses another model and a mismatched KV layout by name, and keeps serving",
          "[nodes][prefill]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  const int32_t entity_token = tiny.model->config().entity_adaptor->entity_token_id;
  const int entity_dim = tiny.model->config().entity_adaptor->entity_dim;
  asio::io_context io;
  bool finished = false;
  std::map<uint64_t, std::vector<control::TokenChunk>> chunks;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        {
          auto stranger = co_await rpc::connect("127.0.0.1", prefill_node.port, Clock::now() + seconds(10));
          REQUIRE(stranger.is_ok());
          (*stranger)->start([](control::Envelope) {}, [](const Status&) {});
          control::Envelope hello;
          hello.mutable_hello()->set_model_fingerprint("ffffffffffffffff");
          hello.mutable_hello()->set_protocol_version(rpc::kProtocolVersion);
          auto refused = co_await (*stranger)->call(hello, Clock::now() + seconds(10));
          REQUIRE(refused.is_ok());
          CHECK(refused->error().code() == "failed_precondition");
        }
        control::Hello decode_hello;
        auto decode = co_await greet(decode_node.port, tiny.fingerprint, &chunks, &decode_hello);
        control::Hello prefill_hello;
        auto prefill = co_await greet(prefill_node.port, tiny.fingerprint, nullptr, &prefill_hello);
        GenerationRequest request;
        request.prompt = std::vector<int32_t>(40, 9);
        request.max_new_tokens = 3;

        control::Hello wrong = decode_hello;
        wrong.mutable_kv_layout()->set_block_size(32);
        Driver mismatched(prefill, decode, wrong, prefill_hello, chunks, entity_token, entity_dim);
        control::Envelope reserved = co_await mismatched.reserve(request);
        REQUIRE(reserved.reserve_kv_reply().has_reservation());
        control::Envelope refused = co_await mismatched.prefill(request, reserved.reserve_kv_reply().reservation());
        REQUIRE(refused.has_error());
        CHECK_THAT(refused.error().message(), Catch::Contains("block_size"));
        mismatched.cancel(reserved.request_id());

        Driver driver(prefill, decode, decode_hello, prefill_hello, chunks, entity_token, entity_dim);
        CallResult result = co_await driver.run(request);
        CHECK(result.tokens.size() == 3);
        decode->close(Status::ok());
        prefill->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(120));
  REQUIRE(finished);
  CHECK(decode_node.shows_used(0));
  CHECK(prefill_node.shows_used(0));
}

TEST_CASE("a prefill node reports its load to the peers it greeted, about every second", "[nodes][prefill]") {
  TinyModel tiny;
  Node prefill_node("prefill", tiny, "tcp");
  asio::io_context io;
  std::vector<control::LoadReport> reports;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto connection = co_await rpc::connect("127.0.0.1", prefill_node.port, Clock::now() + seconds(5));
        REQUIRE(connection.is_ok());
        (*connection)
            ->start(
                [&](control::Envelope envelope) {
                  if (envelope.has_load_report()) reports.push_back(envelope.load_report());
                },
                [](const Status&) {});
        control::Envelope hello;
        hello.mutable_hello()->set_model_fingerprint(tiny.fingerprint);
        hello.mutable_hello()->set_protocol_version(rpc::kProtocolVersion);
        auto greeted = co_await (*connection)->call(hello, Clock::now() + seconds(10));
        REQUIRE(greeted.is_ok());
        REQUIRE(greeted->has_hello());
        asio::steady_timer wait(co_await asio::this_coro::executor);
        for (int i = 0; i < 100 && reports.empty(); ++i) {
          wait.expires_after(milliseconds(50));
          co_await wait.async_wait(asio::use_awaitable);
        }
        (*connection)->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(30));
  REQUIRE(finished);
  REQUIRE_FALSE(reports.empty());
  CHECK(reports.front().queue_depth() == 0);
  CHECK(reports.front().kv_blocks_used() == 0);
}

}  // namespace
}  // namespace recgpt::testing
