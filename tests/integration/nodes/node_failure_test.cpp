// A node killed in the middle of an agent call (a 7000-token prompt on the `small` model, so the prefill runs
// long enough to be interrupted): killing the prefill node fails the caller's prefill call at once, and the
// decode node's reservation returns its blocks once that writer is over; killing the decode node fails the prefill
// (its KV stream to a dead peer) within the deadline, and the prefill node frees its blocks and keeps serving.
#include <signal.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {

constexpr milliseconds kKillAfter(300);
constexpr milliseconds kReservationLifetime(3000);
constexpr milliseconds kFailureDeadline(5000);  // how soon after the kill the caller must know

// A prefill call whose answer nobody reads (it fails once the caller hung up); counts itself in `ended` when done.
// `driver` and `ended` must outlive it: await_calls() before they go.
asio::awaitable<void> send_prefill(Driver& driver, GenerationRequest request, control::Reservation reservation,
                                   int& ended) {
  (void)co_await driver.try_prefill(request, reservation);
  ++ended;
}

asio::awaitable<void> await_calls(const int& ended, int calls) {
  asio::steady_timer wait(co_await asio::this_coro::executor);
  for (int i = 0; i < 3000 && ended < calls; ++i) {
    wait.expires_after(milliseconds(10));
    co_await wait.async_wait(asio::use_awaitable);
  }
  REQUIRE(ended == calls);
}

// Kills `node` kKillAfter from now, on the io_context; the time of the kill lands in `killed_at`.
void kill_later(asio::steady_timer& timer, Node& node, Clock::time_point& killed_at) {
  timer.expires_after(kKillAfter);
  timer.async_wait([&node, &killed_at](const boost::system::error_code& error) {
    if (error) return;
    node.process.kill(SIGKILL);
    killed_at = Clock::now();
  });
}

TEST_CASE("killing the prefill node mid-request fails the call at once, the decode node's blocks come back",
          "[nodes][failure]") {
  TinyModel small("small");
  Node decode_node("decode", small, "tcp", 128);
  Node prefill_node("prefill", small, "tcp", 128);
  drive_pair(small, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    const GenerationRequest request = long_prompt_request();
    control::Envelope reserved = co_await driver.reserve(request, unix_ms_from_now(kReservationLifetime));
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    CHECK(decode_node.shows_used((7000 + 4 + 15) / 16));

    asio::steady_timer timer(co_await asio::this_coro::executor);
    Clock::time_point killed_at;
    kill_later(timer, prefill_node, killed_at);
    Result<control::Envelope> reply = co_await driver.try_prefill(request, reserved.reserve_kv_reply().reservation());
    INFO("the prefill call ended with " << (reply.is_ok() ? reply->DebugString() : reply.status().to_string()));
    REQUIRE(killed_at != Clock::time_point{});  // the prefill was still running when its node died
    CHECK_FALSE(reply.is_ok());
    CHECK(Clock::now() - killed_at < kFailureDeadline);
  });
  // The caller's connection closed with the reservation live: the prompt blocks stay fenced until the attempt it
  // named is over, its writer dead for 5 s (or the reservation's deadline plus 5 s, whichever comes first).
  CHECK(decode_node.shows_used(0, kReservationLifetime + seconds(20)));
}

TEST_CASE(
    "killing the decode node mid-transfer fails the prefill within the deadline, the prefill node frees its "
    "blocks",
    "[nodes][failure]") {
  TinyModel small("small");
  Node decode_node("decode", small, "tcp", 128);
  Node prefill_node("prefill", small, "tcp", 128);
  drive_pair(small, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    const GenerationRequest request = long_prompt_request();
    control::Envelope reserved = co_await driver.reserve(request);
    REQUIRE(reserved.reserve_kv_reply().has_reservation());

    asio::steady_timer timer(co_await asio::this_coro::executor);
    Clock::time_point killed_at;
    kill_later(timer, decode_node, killed_at);
    Result<control::Envelope> reply = co_await driver.try_prefill(request, reserved.reserve_kv_reply().reservation());
    INFO("the prefill call ended with " << (reply.is_ok() ? reply->DebugString() : reply.status().to_string()));
    REQUIRE(killed_at != Clock::time_point{});
    REQUIRE(reply.is_ok());  // the prefill node itself is alive and answers
    CHECK(reply->has_error());
    CHECK(Clock::now() - killed_at < kFailureDeadline + seconds(30));  // the stream's finish deadline bounds it
  });
  CHECK(prefill_node.shows_used(0));
}

TEST_CASE("a caller that hangs up frees the prefill node: its running and queued prefills are dropped, not computed",
          "[nodes][failure][hang_up]") {
  TinyModel small("small");
  Node decode_node("decode", small, "tcp", 128);
  Node prefill_node("prefill", small, "tcp", 128, {"--max-batch-tokens", "64"});  // ~110 steps for the long one
  const GenerationRequest long_one = long_prompt_request();
  drive_pair(small, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    std::vector<control::LoadReport> reports;
    auto observer = co_await greet(prefill_node.port, small.fingerprint, nullptr, nullptr, &reports);
    GenerationRequest short_one;
    short_one.prompt = std::vector<int32_t>(40, 9);
    short_one.max_new_tokens = 4;
    std::vector<control::Reservation> reservations;
    for (const GenerationRequest* request : std::vector<const GenerationRequest*>{&long_one, &short_one}) {
      control::Envelope reserved = co_await driver.reserve(*request, unix_ms_from_now(seconds(60)));
      REQUIRE(reserved.reserve_kv_reply().has_reservation());
      reservations.push_back(reserved.reserve_kv_reply().reservation());
    }
    // Both sent; the short one queues behind the long one (which takes the whole step budget).
    auto executor = co_await asio::this_coro::executor;
    int ended = 0;
    asio::co_spawn(executor, send_prefill(driver, long_one, reservations[0], ended), asio::detached);
    asio::co_spawn(executor, send_prefill(driver, short_one, reservations[1], ended), asio::detached);
    // Hang up once the prefill node reports both in hand (its load reports come each second).
    asio::steady_timer wait(executor);
    auto report_shows = [&](uint32_t depth, size_t after) {
      return reports.size() > after && reports.back().queue_depth() == depth;
    };
    for (int i = 0; i < 300 && !report_shows(2, 0); ++i) {
      wait.expires_after(milliseconds(10));
      co_await wait.async_wait(asio::use_awaitable);
    }
    REQUIRE(report_shows(2, 0));
    driver.hang_up_prefill();
    const size_t at_hang_up = reports.size();
    for (int i = 0; i < 1000 && !report_shows(0, at_hang_up); ++i) {
      wait.expires_after(milliseconds(10));
      co_await wait.async_wait(asio::use_awaitable);
    }
    REQUIRE(report_shows(0, at_hang_up));
    observer->close(Status::ok());
    co_await await_calls(ended, 2);
  });
  // Neither finished: the long one stopped between steps, the short one was never computed.
  CHECK(prefill_node.metric("recgpt_prefill_tokens_total\\{.*kind=\"computed\".*\\}") == 0);
  CHECK(prefill_node.shows_used(0));
}

TEST_CASE(
    "blocks fenced for prefill attempts the router gave up on come back when their prefill node dies, running or "
    "queued",
    "[nodes][failure][fence]") {
  TinyModel small("small");
  Node decode_node("decode", small, "tcp", 128);
  Node prefill_node("prefill", small, "tcp", 128, {"--max-batch-tokens", "64"});
  const GenerationRequest long_one = long_prompt_request();
  drive_pair(small, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    GenerationRequest short_one;
    short_one.prompt = std::vector<int32_t>(40, 9);
    short_one.max_new_tokens = 4;
    std::vector<control::Envelope> reserved;
    for (const GenerationRequest* request : std::vector<const GenerationRequest*>{&long_one, &short_one}) {
      reserved.push_back(co_await driver.reserve(*request, unix_ms_from_now(seconds(60))));
      REQUIRE(reserved.back().reserve_kv_reply().has_reservation());
    }
    auto executor = co_await asio::this_coro::executor;
    int ended = 0;
    for (int i = 0; i < 2; ++i) {
      asio::co_spawn(executor,
                     send_prefill(driver, i == 0 ? long_one : short_one,
                                  reserved[static_cast<size_t>(i)].reserve_kv_reply().reservation(), ended),
                     asio::detached);
    }
    asio::steady_timer wait(executor);
    wait.expires_after(milliseconds(300));  // the long one computes, the short one waits behind it
    co_await wait.async_wait(asio::use_awaitable);

    // The router gives up on both calls: their prompt blocks stay fenced (3 of the short one's 3, the long one's
    // 438 of 438) while the prefill node may still write them.
    for (const control::Envelope& reservation : reserved) driver.cancel(reservation.request_id(), 1);
    CHECK(decode_node.shows_used((7000 + 15) / 16 + 3));
    prefill_node.process.kill(SIGKILL);
    co_await await_calls(ended, 2);  // both fail with the node
  });
  // Dead, it writes nothing more: both fences end long before the reservations' deadline (60 s), the queued call's
  // too (its prefill node announced it).
  CHECK(decode_node.shows_used(0));
  CHECK(decode_node.metric("recgpt_decode_kv_fences_lapsed_total\\{.*\\}") == 0);
}

TEST_CASE("a decode node that answers nothing costs the prefill node one bounded connect, then fails at once",
          "[nodes][node_failure][unreachable]") {
  TinyModel tiny;
  Node hung("decode", tiny, "tcp", 8, {"--node-id", "decode-hung"});
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  drive_pair(tiny, decode_node, prefill_node, [&](Driver& for_decode) -> asio::awaitable<void> {
    control::Hello hung_hello;
    auto to_hung = co_await greet(hung.port, tiny.fingerprint, nullptr, &hung_hello);
    Driver for_hung = for_decode.with_decode(to_hung, hung_hello);
    GenerationRequest request;
    for (int i = 0; i < 40; ++i) request.prompt.push_back(4 + (i * 31) % 170);
    request.max_new_tokens = 4;
    const control::Envelope hung_reserved = co_await for_hung.reserve(request, unix_ms_from_now(seconds(60)));
    const control::Envelope reserved = co_await for_decode.reserve(request, unix_ms_from_now(seconds(60)));
    REQUIRE(hung_reserved.reserve_kv_reply().has_reservation());
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    // Stopped, the decode node accepts the prefill node's connection in its kernel and never completes the
    // transfer engine's wire-up: the connect gives up after 5 s, long before the request's 30 s deadline (the
    // answer must come within 20 s).
    Paused paused(hung);
    const control::Reservation& hung_reservation = hung_reserved.reserve_kv_reply().reservation();
    Result<control::Envelope> first = co_await for_hung.try_prefill(request, hung_reservation, seconds(20), 1);
    REQUIRE(first.is_ok());
    REQUIRE(first->has_error());
    CHECK_THAT(first->error().message(), Catch::Contains("could not be reached"));
    // The next request for it fails at once rather than costing the connect timeout again...
    Result<control::Envelope> again = co_await for_hung.try_prefill(request, hung_reservation, seconds(3), 2);
    REQUIRE(again.is_ok());
    REQUIRE(again->has_error());
    CHECK_THAT(again->error().message(), Catch::Contains("fail for"));
    // ...and a request for another decode node goes through.
    const control::Envelope done = co_await for_decode.prefill(request, reserved.reserve_kv_reply().reservation());
    CHECK(done.has_prefill_done());
    to_hung->close(Status::ok());
  });
  CHECK(prefill_node.shows_used(0));
}

TEST_CASE("SIGTERM drains a decode node: no new reservations, the running stream finishes, then exit 0",
          "[nodes][failure][drain]") {
  TinyModel small("small");
  Node decode_node("decode", small, "tcp", 128);
  Node prefill_node("prefill", small, "tcp", 128);
  drive_pair(small, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    GenerationRequest request;
    request.prompt = std::vector<int32_t>(64, 17);
    request.max_new_tokens = 3000;
    control::Envelope reserved = co_await driver.reserve(request);
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    const control::Reservation reservation = reserved.reserve_kv_reply().reservation();
    control::Envelope done = co_await driver.prefill(request, reservation);
    REQUIRE(done.has_prefill_done());
    const uint64_t stream = driver.start(request, reservation.reservation_id(), done.prefill_done().first_token());
    asio::steady_timer wait(co_await asio::this_coro::executor);
    while (driver.chunks_of(stream).empty()) {
      wait.expires_after(milliseconds(5));
      co_await wait.async_wait(asio::use_awaitable);
    }
    decode_node.process.kill(SIGTERM);
    wait.expires_after(milliseconds(50));
    co_await wait.async_wait(asio::use_awaitable);
    control::Envelope refused = co_await driver.reserve(request);
    CHECK(refused.error().code() == "unavailable");
    CHECK_THAT(refused.error().message(), Catch::Contains("draining"));
    std::vector<control::TokenChunk> all = co_await driver.finished_stream(stream);
    CHECK(all.back().finish_reason() == "length");
    int64_t tokens = 0;
    for (const control::TokenChunk& chunk : all) tokens += chunk.token_ids_size();
    CHECK(tokens == 2999);  // every token after the first, none cut off
  });
  auto exit_code = decode_node.process.wait(Clock::now() + seconds(30));
  REQUIRE(exit_code.is_ok());
  CHECK(*exit_code == 0);
}

}  // namespace
}  // namespace recgpt::testing
