#include "decode_node/kv_arrivals.h"

#include <algorithm>

#include "kv_transfer/kv_stream.h"
#include "node/node_protocol.h"

namespace recgpt::decode {
namespace {

std::string attempt_label(uint64_t reservation, uint32_t attempt) {
  return "prefill attempt " + std::to_string(attempt) + " of reservation " + std::to_string(reservation);
}

}  // namespace

KvArrivals::KvArrivals(kv::TransferEngine& engine, std::chrono::milliseconds gone_writer_grace)
    : engine_(engine), gone_writer_grace_(gone_writer_grace), thread_([this] { run(); }) {}

KvArrivals::~KvArrivals() {
  std::vector<LandingWaiter> landing;
  std::vector<EndsWaiter> ending;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  thread_.join();
  {
    std::lock_guard lock(mutex_);
    landing.swap(landing_);
    ending.swap(ending_);
  }
  for (LandingWaiter& waiter : landing) waiter.landed(unavailable("the decode node is stopping"));
  for (EndsWaiter& waiter : ending) waiter.ended(false);
}

void KvArrivals::when_landed(uint64_t reservation, uint32_t attempt, kv::Deadline deadline, Landed landed) {
  std::optional<Status> now;
  {
    std::lock_guard lock(mutex_);
    LandingWaiter waiter{{reservation, attempt}, deadline, std::move(landed)};
    if (stopping_) {
      now = unavailable("the decode node is stopping");
    } else {
      now = landing_result(waiter, kv::Clock::now());
    }
    if (!now.has_value()) {
      landing_.push_back(std::move(waiter));
      return;
    }
    landed = std::move(waiter.landed);
  }
  landed(std::move(*now));  // arrived already, or it never can
}

void KvArrivals::when_ended(uint64_t reservation, std::vector<uint32_t> attempts, kv::Deadline deadline, Ended ended) {
  bool all_ended = false;
  {
    std::lock_guard lock(mutex_);
    EndsWaiter waiter{reservation, std::move(attempts), deadline, std::move(ended)};
    if (!stopping_) {
      all_ended = take_ends(waiter, kv::Clock::now());
      if (!all_ended) {
        ending_.push_back(std::move(waiter));
        return;
      }
    }
    ended = std::move(waiter.ended);
  }
  ended(all_ended);
}

void KvArrivals::sent(uint64_t reservation, uint32_t attempt, kv::Bytes writer) {
  std::lock_guard lock(mutex_);
  Stream& stream = streams_[{reservation, attempt}];
  if (stream.at == kv::Clock::time_point{}) stream.at = kv::Clock::now();
  stream.sent = true;
  stream.writer_endpoint = std::move(writer);
}

uint32_t KvArrivals::attempts_sent(uint64_t reservation) const {
  std::lock_guard lock(mutex_);
  uint32_t highest = 0;
  for (auto it = streams_.lower_bound({reservation, 0}); it != streams_.end() && it->first.first == reservation; ++it) {
    if (it->second.sent) highest = it->first.second;
  }
  return highest;
}

void KvArrivals::forget(uint64_t reservation) {
  std::vector<Landed> ended;
  {
    std::lock_guard lock(mutex_);
    // Ended streams nobody will take go; a started one stays (a write fence may need to know its writer).
    std::erase_if(streams_, [&](const auto& entry) {
      return entry.first.first == reservation && entry.second.completed.has_value();
    });
    std::erase_if(landing_, [&](LandingWaiter& waiter) {
      if (waiter.stream.first != reservation) return false;
      ended.push_back(std::move(waiter.landed));
      return true;
    });
  }
  for (Landed& landed : ended) {
    landed(failed_precondition("reservation " + std::to_string(reservation) + " ended before its KV arrived"));
  }
}

KvArrivalCounters KvArrivals::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

Status KvArrivals::receive_status() const {
  std::lock_guard lock(mutex_);
  return receive_status_;
}

void KvArrivals::run() {
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    Result<std::optional<kv::Notification>> received = engine_.wait_notification(kv::Clock::now() + kPollSlice);
    {
      std::lock_guard lock(mutex_);
      receive_status_ = received.status();
    }
    if (received.is_ok() && received->has_value()) {
      record(**received);
    } else if (!received.is_ok()) {
      std::this_thread::sleep_for(kPollSlice);  // a failing engine must not make this thread spin
    }
    for (auto& answer : take_resolved(kv::Clock::now())) answer();
  }
}

bool KvArrivals::writer_gone(Stream& stream, kv::Clock::time_point now) {
  if (!stream.writer.has_value() && !stream.writer_gone_at.has_value() && !stream.writer_endpoint.empty() &&
      now >= stream.next_watch) {
    Result<kv::PeerId> watched = engine_.watch(stream.writer_endpoint);
    ++counters_.writers_watched;
    if (watched.is_ok()) {
      stream.writer = *watched;
    } else if (watched.status().code() == StatusCode::kUnavailable) {
      stream.writer_gone_at = now;
    } else {
      stream.next_watch = now + kWatchRetry;  // cannot tell (not in contact): ask again later, not every poll
    }
  }
  if (!stream.writer_gone_at.has_value() && stream.writer.has_value() && !engine_.peer_status(*stream.writer).is_ok()) {
    stream.writer_gone_at = now;
  }
  return stream.writer_gone_at.has_value() && now >= *stream.writer_gone_at + gone_writer_grace_;
}

void KvArrivals::record(const kv::Notification& notification) {
  Result<kv::StreamNotification> stream = kv::decode_stream_notification(notification.message);
  std::optional<node::KvStreamName> name = stream.is_ok() ? node::parse_kv_stream_id(stream->request_id) : std::nullopt;
  std::lock_guard lock(mutex_);
  if (!name.has_value()) {
    ++counters_.ignored;
    return;
  }
  Stream& known = streams_[{name->reservation, name->attempt}];
  known.at = kv::Clock::now();
  if (stream->kind == kv::StreamEventKind::kStarted) {
    ++counters_.started;
    known.writer = notification.peer;
    return;
  }
  const bool completed = stream->kind == kv::StreamEventKind::kCompleted;
  ++(completed ? counters_.completed : counters_.aborted);
  known.completed = completed;
}

std::optional<Status> KvArrivals::landing_result(const LandingWaiter& waiter, kv::Clock::time_point now) {
  if (!receive_status_.is_ok()) return receive_status_;  // nothing more can arrive: fail now, not at each deadline
  // A dead writer does not fail the wait: its `completed`, sent before it died, may still be on its way.
  auto stream = streams_.find(waiter.stream);
  if (stream != streams_.end() && stream->second.completed.has_value()) {
    const bool completed = *stream->second.completed;
    streams_.erase(stream);
    if (completed) return Status::ok();
    return unavailable(attempt_label(waiter.stream.first, waiter.stream.second) + " was aborted by its prefill node");
  }
  if (now < waiter.deadline) return std::nullopt;
  ++counters_.timed_out;
  return deadline_exceeded("the KV of " + attempt_label(waiter.stream.first, waiter.stream.second) +
                           " did not arrive from its prefill node in time");
}

bool KvArrivals::take_ends(EndsWaiter& waiter, kv::Clock::time_point now) {
  std::erase_if(waiter.open, [&](uint32_t attempt) {
    auto stream = streams_.find({waiter.reservation, attempt});
    if (stream == streams_.end()) return false;
    const bool ended = stream->second.completed.has_value();
    const bool writer_died = !ended && writer_gone(stream->second, now);
    if (!ended && !writer_died) return false;
    if (writer_died) ++counters_.writers_died;
    streams_.erase(stream);
    return true;
  });
  return waiter.open.empty();
}

std::vector<std::function<void()>> KvArrivals::take_resolved(kv::Clock::time_point now) {
  std::vector<std::function<void()>> answers;
  std::lock_guard lock(mutex_);
  std::erase_if(landing_, [&](LandingWaiter& waiter) {
    std::optional<Status> result = landing_result(waiter, now);
    if (!result.has_value()) return false;
    answers.push_back([landed = std::move(waiter.landed), result = std::move(*result)] { landed(result); });
    return true;
  });
  std::erase_if(ending_, [&](EndsWaiter& waiter) {
    const bool all_ended = take_ends(waiter, now);
    if (!all_ended && now < waiter.deadline) return false;
    if (!all_ended) ++counters_.ends_timed_out;
    answers.push_back([ended = std::move(waiter.ended), all_ended] { ended(all_ended); });
    return true;
  });
  std::erase_if(streams_, [now](const auto& entry) { return now - entry.second.at > kRetention; });
  return answers;
}

}  // namespace recgpt::decode
