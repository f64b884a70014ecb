// Prefill attempts the router gave up on, between a real prefill process and a real decode process over ucx
// (tcp): a StartDecode waits for the KV of the attempt it names, not for an earlier attempt's; and blocks a
// late attempt may still write stay out of reuse until that attempt ended on the decode node, or its prefill
// node was found dead, or dropped the attempt because the router died. Every wait has a deadline; the processes
// are killed at the end.
#include <signal.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {

GenerationRequest forty_token_request() {
  GenerationRequest request;
  for (int i = 0; i < 40; ++i) request.prompt.push_back(4 + (i * 31) % 170);  // 3 blocks of 16
  request.max_new_tokens = 8;
  request.sampling.repetition_penalty = 1.8f;  // makes the output depend on the KV (disaggregated_test.cpp)
  return request;
}

TEST_CASE("a StartDecode waits for the prefill attempt it names, not for an earlier one the router gave up on",
          "[nodes][attempts]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  drive_pair(tiny, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    const GenerationRequest request = forty_token_request();
    control::Envelope reserved = co_await driver.reserve(request);
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    const control::Reservation reservation = reserved.reserve_kv_reply().reservation();

    // Attempt 1 completes, but the router had given up on it: decoding from attempt 2 must wait for attempt 2.
    Result<control::Envelope> first = co_await driver.try_prefill(request, reservation, seconds(60), 1);
    REQUIRE(first.is_ok());
    REQUIRE(first->has_prefill_done());
    const uint64_t stream =
        driver.start(request, reservation.reservation_id(), first->prefill_done().first_token(), 2, 2);
    asio::steady_timer pause(co_await asio::this_coro::executor);
    pause.expires_after(milliseconds(500));
    co_await pause.async_wait(asio::use_awaitable);
    CHECK(driver.chunks_of(stream).empty());  // neither tokens nor an error: still waiting

    Result<control::Envelope> second = co_await driver.try_prefill(request, reservation, seconds(60), 2);
    REQUIRE(second.is_ok());
    REQUIRE(second->has_prefill_done());
    std::vector<int32_t> tokens = {static_cast<int32_t>(second->prefill_done().first_token())};
    for (const control::TokenChunk& chunk : co_await driver.finished_stream(stream)) {
      tokens.insert(tokens.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    }
    CHECK(tokens == colocated_tokens(*tiny.model, request));
    // Attempt 1 ended before the start: nothing stays fenced.
    CHECK(decode_node.shows_used(0));
    CHECK(decode_node.metric("recgpt_decode_kv_blocks_fenced\\{.*\\}") == 0);
  });
}

TEST_CASE("a cancelled reservation's prompt blocks stay out of reuse until the late prefill attempt ended",
          "[nodes][attempts]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  drive_pair(tiny, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    GenerationRequest request = forty_token_request();
    request.max_new_tokens = 30;  // 70 tokens: 5 blocks, 3 of them the prompt's
    control::Envelope reserved = co_await driver.reserve(request, unix_ms_from_now(seconds(60)));
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    const control::Reservation reservation = reserved.reserve_kv_reply().reservation();
    CHECK(decode_node.shows_used(5));

    // The router sent attempt 1, lost its prefill node's answer and gave up on the call.
    driver.cancel(reserved.request_id(), 1);
    CHECK(decode_node.shows_used(3));  // the budget's blocks came back, the prompt's did not
    CHECK(decode_node.metric("recgpt_decode_kv_blocks_fenced\\{.*\\}") == 3);

    // The attempt was alive after all: it writes the blocks and ends; then (long before the reservation's
    // deadline) they come back.
    Result<control::Envelope> late = co_await driver.try_prefill(request, reservation, seconds(60), 1);
    REQUIRE(late.is_ok());
    CHECK(late->has_prefill_done());
    CHECK(decode_node.shows_used(0));
    CHECK(decode_node.metric("recgpt_decode_kv_blocks_fenced\\{.*\\}") == 0);
    CHECK(decode_node.metric("recgpt_decode_kv_fences_lapsed_total\\{.*\\}") == 0);
  });
}

// Sends the prefill attempt and forgets it; `ended` is set once its call ended (the caller must keep the driver and
// `ended` alive until then).
asio::awaitable<void> send_attempt(Driver& driver, GenerationRequest request, control::Reservation reservation,
                                   bool& ended) {
  (void)co_await driver.try_prefill(request, reservation, seconds(60), 1);
  ended = true;
}

asio::awaitable<void> sleep_for(milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  co_await timer.async_wait(asio::use_awaitable);
}

// Waits (up to 5 s) for a send_attempt() to end.
asio::awaitable<void> await_end(const bool& ended) {
  for (int i = 0; i < 500 && !ended; ++i) co_await sleep_for(milliseconds(10));
  REQUIRE(ended);
}

// The fence of a reservation's prompt blocks is released long before the reservation's deadline (60 s here): within
// the decode node's grace for a dead writer (5 s), plus the checks' own latency.
constexpr milliseconds kReleasedWithin(seconds(20));

TEST_CASE("a prefill attempt whose node died before it started frees its blocks once the node is found dead",
          "[nodes][attempts][writer_died]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  drive_pair(tiny, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    GenerationRequest request = forty_token_request();
    // A call first: the decode node's transfer engine is in contact with the prefill node's, as in any cluster
    // that has served (it watches only engines it knows).
    CallResult first = co_await driver.run(request);
    CHECK(first.tokens == colocated_tokens(*tiny.model, request));
    control::Envelope reserved = co_await driver.reserve(request, unix_ms_from_now(seconds(60)));
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    // The prefill node takes the attempt into its socket but never gets to announce it (`started`): it is
    // stopped, then killed.
    prefill_node.process.kill(SIGSTOP);
    bool ended = false;
    asio::co_spawn(co_await asio::this_coro::executor,
                   send_attempt(driver, request, reserved.reserve_kv_reply().reservation(), ended), asio::detached);
    co_await sleep_for(milliseconds(300));
    prefill_node.process.kill(SIGKILL);
    co_await await_end(ended);

    driver.cancel(reserved.request_id(), 1);  // the router gives up on the call
    const auto cancelled = Clock::now();
    CHECK(decode_node.shows_used(0, kReleasedWithin));
    INFO("released after " << std::chrono::duration_cast<milliseconds>(Clock::now() - cancelled).count() << " ms");
    CHECK(decode_node.metric("recgpt_decode_kv_stream_ends_total\\{.*end=\"writer_died\".*\\}") == 1);
    CHECK(decode_node.metric("recgpt_decode_kv_fences_lapsed_total\\{.*\\}") == 0);
  });
}

TEST_CASE("a router that dies mid-prefill: the blocks come back once the prefill node dropped the attempt",
          "[nodes][attempts][router_died]") {
  TinyModel small("small");
  Node decode_node("decode", small, "tcp", 128);
  // Short steps (~110 for the prompt): the prefill node drops the attempt at its next one (a step is not cut short).
  Node prefill_node("prefill", small, "tcp", 128, {"--max-batch-tokens", "64"});
  drive_pair(small, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    const GenerationRequest request = long_prompt_request();  // still prefilling when the router goes
    control::Envelope reserved = co_await driver.reserve(request, unix_ms_from_now(seconds(60)));
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    bool ended = false;
    asio::co_spawn(co_await asio::this_coro::executor,
                   send_attempt(driver, request, reserved.reserve_kv_reply().reservation(), ended), asio::detached);
    co_await sleep_for(milliseconds(500));
    REQUIRE_FALSE(ended);
    driver.hang_up();  // with the reservation held and its attempt running
    co_await await_end(ended);
  });
  CHECK(decode_node.shows_used(0, kReleasedWithin));
  CHECK(decode_node.metric("recgpt_decode_kv_stream_ends_total\\{.*end=\"aborted\".*\\}") == 1);
  CHECK(decode_node.metric("recgpt_decode_kv_fences_lapsed_total\\{.*\\}") == 0);
}

}  // namespace
}  // namespace recgpt::testing
