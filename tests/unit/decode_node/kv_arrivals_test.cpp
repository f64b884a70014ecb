// The decode node's wait for a prompt's KV: KV stream notifications sent through the `local` transfer backend
// open the waits of their (reservation, prefill attempt), whichever comes first; other attempts, other
// notifications and garbage open nothing; a wait without its KV ends at its deadline; waits for the ends of
// attempts that may still write; the stream ids round-trip.
#include "decode_node/kv_arrivals.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <limits>
#include <string>

#include "kv_transfer/kv_stream.h"
#include "node/node_protocol.h"

namespace recgpt::decode {
namespace {

using std::chrono::milliseconds;

// A reader engine (watched by KvArrivals) and a writer engine connected to it.
struct EnginePair {
  std::unique_ptr<kv::TransferEngine> reader = make("reader");
  std::unique_ptr<kv::TransferEngine> writer = make("writer");
  kv::PeerId peer = writer->connect(reader->local_endpoint().value(), kv::Clock::now() + milliseconds(1000)).value();

  static std::unique_ptr<kv::TransferEngine> make(const std::string& name) {
    kv::TransferEngineOptions options;
    options.name = name;
    return kv::create_transfer_engine("local", options).value();
  }

  void send(const kv::Bytes& message) {
    auto sent = writer->notify(peer, message);
    REQUIRE(sent.is_ok());
    REQUIRE((*sent)->wait(kv::Clock::now() + milliseconds(1000)).is_ok());
  }

  void send_stream(kv::StreamEventKind kind, const std::string& stream_id) {
    send(kv::encode_stream_notification({kind, stream_id, {}, std::nullopt}).value());
  }
};

// The result of a wait, or nullopt if it has not come within `timeout`.
std::optional<Status> outcome(std::future<Status>& future, milliseconds timeout = milliseconds(2000)) {
  if (future.wait_for(timeout) != std::future_status::ready) return std::nullopt;
  return future.get();
}

// The result of a wait that must have ended within `timeout`.
Status ended(std::future<Status>& future, milliseconds timeout = milliseconds(2000)) {
  std::optional<Status> result = outcome(future, timeout);
  REQUIRE(result.has_value());
  return *result;
}

std::future<Status> wait_for(KvArrivals& arrivals, uint64_t reservation, uint32_t attempt, milliseconds timeout) {
  auto promise = std::make_shared<std::promise<Status>>();
  std::future<Status> future = promise->get_future();
  arrivals.when_landed(reservation, attempt, kv::Clock::now() + timeout,
                       [promise](Status landed) { promise->set_value(landed); });
  return future;
}

std::future<bool> ends_of(KvArrivals& arrivals, uint64_t reservation, std::vector<uint32_t> attempts,
                          milliseconds timeout) {
  auto promise = std::make_shared<std::promise<bool>>();
  std::future<bool> future = promise->get_future();
  arrivals.when_ended(reservation, std::move(attempts), kv::Clock::now() + timeout,
                      [promise](bool all_ended) { promise->set_value(all_ended); });
  return future;
}

std::optional<bool> outcome(std::future<bool>& future, milliseconds timeout = milliseconds(2000)) {
  if (future.wait_for(timeout) != std::future_status::ready) return std::nullopt;
  return future.get();
}

void await_notifications(const KvArrivals& arrivals, uint64_t count) {
  auto seen = [&] {
    const KvArrivalCounters counters = arrivals.counters();
    return counters.completed + counters.aborted + counters.ignored;
  };
  for (int i = 0; i < 400 && seen() < count; ++i) std::this_thread::sleep_for(milliseconds(5));
  REQUIRE(seen() == count);
}

std::string stream(uint64_t reservation, uint32_t attempt) { return node::kv_stream_id({reservation, attempt}); }

TEST_CASE("a prefill attempt's KV stream opens its wait, whether it came before the wait or after",
          "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals arrivals(*engines.reader);

  // Before: the wait opens at once.
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(7, 1));
  await_notifications(arrivals, 1);
  std::future<Status> before = wait_for(arrivals, 7, 1, milliseconds(5000));
  REQUIRE(before.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  CHECK(before.get().is_ok());

  // After: the wait opens when it comes, not sooner.
  std::future<Status> after = wait_for(arrivals, 8, 1, milliseconds(5000));
  CHECK_FALSE(outcome(after, milliseconds(100)).has_value());
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(8, 1));
  const Status landed = ended(after);
  CHECK(landed.is_ok());

  // One arrival opens one wait: a second wait for 8 has to wait again.
  std::future<Status> again = wait_for(arrivals, 8, 1, milliseconds(150));
  const Status second = ended(again);
  CHECK(second.code() == StatusCode::kDeadlineExceeded);
}

TEST_CASE("a late completion of an attempt the router gave up on does not open the retry's wait",
          "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals arrivals(*engines.reader);
  std::future<Status> retry = wait_for(arrivals, 20, 2, milliseconds(5000));
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(20, 1));
  await_notifications(arrivals, 1);
  CHECK_FALSE(outcome(retry, milliseconds(100)).has_value());
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(20, 2));
  const Status landed = ended(retry);
  CHECK(landed.is_ok());
}

TEST_CASE("other attempts, other notifications and garbage open no wait, the deadline ends it, its own abort ends it",
          "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals arrivals(*engines.reader);
  std::future<Status> waiting = wait_for(arrivals, 9, 2, milliseconds(400));
  engines.send_stream(kv::StreamEventKind::kAborted, stream(9, 1));  // the attempt before
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(10, 2));
  engines.send_stream(kv::StreamEventKind::kCompleted, "reservation-9");  // no attempt
  engines.send_stream(kv::StreamEventKind::kCompleted, "request-9");
  engines.send(kv::Bytes(12, std::byte{0x5a}));
  const Status result = ended(waiting);
  CHECK(result.code() == StatusCode::kDeadlineExceeded);
  CHECK_THAT(result.message(), Catch::Contains("prefill attempt 2 of reservation 9"));
  KvArrivalCounters counters = arrivals.counters();
  CHECK(counters.aborted == 1);
  CHECK(counters.completed == 1);
  CHECK(counters.ignored == 3);
  CHECK(counters.timed_out == 1);

  // The awaited attempt's own abort: its KV will not come, the wait ends now rather than at its deadline.
  std::future<Status> aborted = wait_for(arrivals, 14, 1, milliseconds(60000));
  engines.send_stream(kv::StreamEventKind::kAborted, stream(14, 1));
  const Status abort = ended(aborted);
  CHECK(abort.code() == StatusCode::kUnavailable);
  CHECK_THAT(abort.message(), Catch::Contains("aborted"));
}

TEST_CASE("a wait for attempts' ends ends once each completed or aborted, before or after, or at its deadline",
          "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals arrivals(*engines.reader);
  engines.send_stream(kv::StreamEventKind::kAborted, stream(30, 1));  // before the wait
  await_notifications(arrivals, 1);
  std::future<bool> both = ends_of(arrivals, 30, {1, 3}, milliseconds(5000));
  CHECK_FALSE(outcome(both, milliseconds(100)).has_value());
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(30, 2));  // not one of them
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(31, 3));  // another reservation
  await_notifications(arrivals, 3);
  CHECK_FALSE(outcome(both, milliseconds(100)).has_value());
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(30, 3));
  CHECK(outcome(both) == std::optional<bool>(true));

  // A cancelled reservation's attempts may still write: forget() does not end the wait, their ends do.
  std::future<bool> after_cancel = ends_of(arrivals, 32, {1}, milliseconds(5000));
  arrivals.forget(32);
  CHECK_FALSE(outcome(after_cancel, milliseconds(100)).has_value());
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(32, 1));
  CHECK(outcome(after_cancel) == std::optional<bool>(true));

  // An attempt that never ends (its node died before sending anything): the deadline.
  std::future<bool> silent = ends_of(arrivals, 33, {1, 2}, milliseconds(150));
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(33, 1));
  CHECK(outcome(silent) == std::optional<bool>(false));
  CHECK(arrivals.counters().ends_timed_out == 1);

  // All ended before the wait: at once.
  engines.send_stream(kv::StreamEventKind::kAborted, stream(34, 1));
  await_notifications(arrivals, 7);
  std::future<bool> already = ends_of(arrivals, 34, {1}, milliseconds(5000));
  REQUIRE(already.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  CHECK(already.get());
}

TEST_CASE("an attempt whose writer died is over for a wait for ends after the grace, but does not fail a landing wait",
          "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals arrivals(*engines.reader, milliseconds(600));
  engines.send_stream(kv::StreamEventKind::kStarted, stream(40, 1));
  engines.send_stream(kv::StreamEventKind::kStarted, stream(41, 1));
  for (int i = 0; i < 400 && arrivals.counters().started < 2; ++i) std::this_thread::sleep_for(milliseconds(5));
  REQUIRE(arrivals.counters().started == 2);
  std::future<bool> fence = ends_of(arrivals, 40, {1}, milliseconds(60000));
  std::future<Status> landing = wait_for(arrivals, 41, 1, milliseconds(500));
  CHECK_FALSE(outcome(fence, milliseconds(100)).has_value());  // a live writer that started: still writing

  engines.writer.reset();  // the writer's engine is destroyed: it writes nothing more
  // What it sent before it died may still be landing: not over before the grace.
  CHECK_FALSE(outcome(fence, milliseconds(200)).has_value());
  CHECK(outcome(fence) == std::optional<bool>(true));
  CHECK(arrivals.counters().writers_died == 1);
  // Its `completed` might still be on its way: the landing wait keeps to its deadline.
  const Status landed = ended(landing);
  CHECK(landed.code() == StatusCode::kDeadlineExceeded);
}

TEST_CASE("an attempt not started is over once the writer the router named is found gone, and not while it lives",
          "[decode][arrivals]") {
  EnginePair engines;
  std::unique_ptr<kv::TransferEngine> gone = EnginePair::make("gone");
  const kv::Bytes gone_endpoint = gone->local_endpoint().value();
  gone.reset();
  KvArrivals arrivals(*engines.reader, milliseconds(300));
  arrivals.sent(50, 1, gone_endpoint);
  arrivals.sent(51, 1, engines.writer->local_endpoint().value());
  arrivals.sent(51, 2, gone_endpoint);
  CHECK(arrivals.attempts_sent(50) == 1);
  CHECK(arrivals.attempts_sent(51) == 2);
  CHECK(arrivals.attempts_sent(52) == 0);

  std::future<bool> gone_writer = ends_of(arrivals, 50, {1}, milliseconds(60000));
  std::future<bool> live_writer = ends_of(arrivals, 51, {1}, milliseconds(60000));
  CHECK_FALSE(outcome(gone_writer, milliseconds(100)).has_value());  // the grace: its `started` may be landing
  CHECK(outcome(gone_writer) == std::optional<bool>(true));
  CHECK_FALSE(outcome(live_writer, milliseconds(500)).has_value());  // a live writer may still start
  CHECK(arrivals.counters().writers_watched >= 2);

  engines.writer.reset();  // found by the watch; its death ends the attempt too
  CHECK(outcome(live_writer) == std::optional<bool>(true));
  CHECK(arrivals.counters().writers_died == 2);
  // A named attempt is watched once a wait asks for its end.
  std::future<bool> named = ends_of(arrivals, 51, {2}, milliseconds(60000));
  CHECK(outcome(named) == std::optional<bool>(true));
}

TEST_CASE("an attempt whose named writer cannot be told dead or alive stays open", "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals arrivals(*engines.reader, milliseconds(0));
  arrivals.sent(60, 1, kv::Bytes(16, std::byte{7}));  // not an endpoint: the watch fails, which says nothing
  std::future<bool> open = ends_of(arrivals, 60, {1}, milliseconds(800));
  CHECK(outcome(open) == std::optional<bool>(false));  // its deadline came
  CHECK(arrivals.counters().writers_died == 0);
}

TEST_CASE("a reservation that ends ends its wait at once and drops its arrival", "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals arrivals(*engines.reader);
  std::future<Status> waiting = wait_for(arrivals, 12, 1, milliseconds(60000));
  arrivals.forget(12);
  const Status result = ended(waiting, milliseconds(0));
  CHECK(result.code() == StatusCode::kFailedPrecondition);
  // An arrival for a reservation that then ended opens no later wait.
  engines.send_stream(kv::StreamEventKind::kCompleted, stream(13, 1));
  await_notifications(arrivals, 1);
  arrivals.forget(13);
  std::future<Status> later = wait_for(arrivals, 13, 1, milliseconds(150));
  const Status late = ended(later);
  CHECK(late.code() == StatusCode::kDeadlineExceeded);
}

TEST_CASE("waits still open when the arrivals end are told so", "[decode][arrivals]") {
  EnginePair engines;
  std::future<Status> waiting;
  std::future<bool> ending;
  {
    KvArrivals arrivals(*engines.reader);
    waiting = wait_for(arrivals, 11, 1, milliseconds(60000));
    ending = ends_of(arrivals, 11, {2}, milliseconds(60000));
  }
  const Status result = ended(waiting, milliseconds(0));
  CHECK(result.code() == StatusCode::kUnavailable);
  CHECK(outcome(ending, milliseconds(0)) == std::optional<bool>(false));
}

// An engine whose notifications cannot be taken (as after a lost copy into staged device memory).
class FailingEngine final : public kv::TransferEngine {
 public:
  std::string_view backend_name() const override { return "failing"; }
  Result<kv::LocalRegionId> register_memory(const kv::MemoryRegion&) override { return no(); }
  Result<kv::AllocatedRegion> allocate_memory(size_t) override { return no(); }
  Status deregister_memory(kv::LocalRegionId) override { return no(); }
  Result<kv::Bytes> export_region(kv::LocalRegionId) override { return no(); }
  Result<kv::Bytes> local_endpoint() override { return no(); }
  Result<kv::PeerId> connect(std::span<const std::byte>, kv::Deadline) override { return no(); }
  Result<kv::PeerId> watch(std::span<const std::byte>) override { return no(); }
  Result<kv::RemoteRegionId> import_region(kv::PeerId, std::span<const std::byte>) override { return no(); }
  void disconnect(kv::PeerId) override {}
  Result<std::unique_ptr<kv::TransferHandle>> submit_writes(kv::PeerId, std::span<const kv::WriteOp>) override {
    return no();
  }
  Result<std::unique_ptr<kv::TransferHandle>> notify(kv::PeerId, std::span<const std::byte>) override { return no(); }
  Result<std::optional<kv::Notification>> wait_notification(kv::Deadline) override { return no(); }
  Status peer_status(kv::PeerId) override { return no(); }

 private:
  static Status no() { return internal_error("a write into device memory was lost"); }
};

TEST_CASE("an engine whose notifications cannot be taken shows in the receive status", "[decode][arrivals]") {
  EnginePair engines;
  KvArrivals working(*engines.reader);
  CHECK(working.receive_status().is_ok());
  FailingEngine failing;
  KvArrivals broken(failing);
  for (int i = 0; i < 200 && broken.receive_status().is_ok(); ++i) std::this_thread::sleep_for(milliseconds(5));
  CHECK(broken.receive_status().code() == StatusCode::kInternal);
  CHECK_THAT(broken.receive_status().message(), Catch::Contains("lost"));
  // A wait on it ends at once with that error, not at its deadline.
  std::future<Status> waiting = wait_for(broken, 3, 1, milliseconds(60000));
  const Status result = ended(waiting, milliseconds(1000));
  CHECK(result.code() == StatusCode::kInternal);
}

TEST_CASE("KV stream ids name their reservation and attempt and nothing else parses as one", "[decode][arrivals]") {
  for (uint64_t reservation : {uint64_t{0}, uint64_t{42}, std::numeric_limits<uint64_t>::max()}) {
    for (uint32_t attempt : {uint32_t{1}, uint32_t{2}, std::numeric_limits<uint32_t>::max()}) {
      const node::KvStreamName name{reservation, attempt};
      CHECK(node::parse_kv_stream_id(node::kv_stream_id(name)) == name);
    }
  }
  CHECK(node::kv_stream_id({42, 2}) == "reservation-42.2");
  for (const char* other : {"", "reservation-", "reservation-12", "reservation-12.", "reservation-.1",
                            "reservation-12x.1", "reservation-12.1x", "reservation--1.1", "reservation-1.-1",
                            "reservation-+1.1", "reservation-1.+1", "reservation-1.2.3", "Reservation-1.1",
                            "request-1.1", "reservation-18446744073709551616.1", "reservation-1.4294967296"}) {
    INFO(other);
    CHECK_FALSE(node::parse_kv_stream_id(other).has_value());
  }
}

}  // namespace
}  // namespace recgpt::decode
