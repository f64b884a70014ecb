// 500 randomised agent calls against real prefill and decode processes (ucx over tcp): whole calls, cancels
// after the reservation and mid-stream, reservations left to expire, prompts too large for the pool. Afterwards
// both nodes' KV pools must be whole again, read from their /metrics.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <random>

#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {

TEST_CASE("after 500 randomised calls with cancels, expiries and no room, both KV pools are whole again",
          "[nodes][no_leak]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  std::mt19937_64 random(20261203);
  std::map<std::string, int> outcomes;

  drive_pair(
      tiny, decode_node, prefill_node,
      [&](Driver& driver) -> asio::awaitable<void> {
        const std::vector<std::vector<int32_t>> contexts = {std::vector<int32_t>(32, 40), std::vector<int32_t>(16, 41),
                                                            std::vector<int32_t>(48, 42)};
        for (int call = 0; call < 500; ++call) {
          GenerationRequest request;
          request.prompt = contexts[random() % contexts.size()];  // shared user contexts, as workflows have
          const int tail = 1 + static_cast<int>(random() % 30);
          for (int i = 0; i < tail; ++i) request.prompt.push_back(static_cast<int32_t>(100 + random() % 500));
          request.max_new_tokens = 1 + static_cast<int32_t>(random() % 6);
          const int action = static_cast<int>(random() % 10);
          if (action == 0) {  // a prompt the pool cannot hold
            request.prompt.assign(20000, 7);
            control::Envelope reply = co_await driver.reserve(request);
            CHECK(reply.reserve_kv_reply().has_no_room());
            ++outcomes["no room"];
            continue;
          }
          const uint64_t deadline = action == 1 ? unix_ms_from_now(milliseconds(1)) : 0;
          control::Envelope reserved = co_await driver.reserve(request, deadline);
          REQUIRE(reserved.reserve_kv_reply().has_reservation());
          const control::Reservation reservation = reserved.reserve_kv_reply().reservation();
          if (action == 1) {  // the KV never comes: the reservation expires
            ++outcomes["expired"];
            continue;
          }
          if (action == 2) {
            driver.cancel(reserved.request_id());
            ++outcomes["cancelled reserved"];
            continue;
          }
          control::Envelope done = co_await driver.prefill(request, reservation);
          REQUIRE(done.has_prefill_done());
          if (action == 3) request.max_new_tokens = 500;  // long enough to be cancelled mid-stream
          const uint64_t stream =
              driver.start(request, reservation.reservation_id(), done.prefill_done().first_token());
          if (action == 3) driver.cancel(stream);
          std::vector<control::TokenChunk> chunks_of_call = co_await driver.finished_stream(stream);
          ++outcomes[chunks_of_call.back().finish_reason()];
        }
      },
      seconds(600));
  for (const auto& [outcome, count] : outcomes) INFO(outcome << ": " << count);
  CHECK(outcomes["no room"] > 0);
  CHECK(outcomes["expired"] > 0);
  CHECK(outcomes["cancelled"] > 0);
  CHECK(outcomes["length"] > 0);
  CHECK(decode_node.shows_used(0));
  CHECK(prefill_node.shows_used(0));
}

}  // namespace
}  // namespace recgpt::testing
