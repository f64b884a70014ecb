#include "decode_node/kv_arrivals.h"

#include <optional>

#include "kv_transfer/kv_stream.h"
#include "node/node_protocol.h"

namespace recgpt::decode {

KvArrivals::KvArrivals(kv::TransferEngine& engine) : engine_(engine), thread_([this] { run(); }) {}

KvArrivals::~KvArrivals() {
  std::vector<Waiter> open;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  thread_.join();
  {
    std::lock_guard lock(mutex_);
    open.swap(waiters_);
  }
  for (Waiter& waiter : open) waiter.landed(unavailable("the decode node is stopping"));
}

void KvArrivals::when_landed(uint64_t reservation, kv::Deadline deadline, Landed landed) {
  Status now = Status::ok();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      now = unavailable("the decode node is stopping");
    } else if (!receive_status_.is_ok()) {
      now = receive_status_;
    } else if (arrived_.erase(reservation) == 0) {
      waiters_.push_back({reservation, deadline, std::move(landed)});
      return;
    }
  }
  landed(std::move(now));  // arrived already, or it never can
}

void KvArrivals::forget(uint64_t reservation) {
  std::vector<Landed> ended;
  {
    std::lock_guard lock(mutex_);
    arrived_.erase(reservation);
    std::erase_if(waiters_, [&](Waiter& waiter) {
      if (waiter.reservation != reservation) return false;
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
    for (auto& [landed, status] : take_resolved(kv::Clock::now())) landed(std::move(status));
  }
}

void KvArrivals::record(const kv::Notification& notification) {
  Result<kv::StreamNotification> stream = kv::decode_stream_notification(notification.message);
  std::optional<uint64_t> reservation =
      stream.is_ok() ? node::reservation_of_kv_stream(stream->request_id) : std::nullopt;
  std::lock_guard lock(mutex_);
  if (!reservation.has_value()) {
    ++counters_.ignored;
  } else if (stream->kind == kv::StreamEventKind::kCompleted) {
    ++counters_.completed;
    arrived_[*reservation] = kv::Clock::now();
  } else {
    ++counters_.aborted;  // a retry on another prefill node may still fill the reservation
  }
}

std::vector<std::pair<KvArrivals::Landed, Status>> KvArrivals::take_resolved(kv::Clock::time_point now) {
  std::vector<std::pair<Landed, Status>> resolved;
  std::lock_guard lock(mutex_);
  // The result of a waiter's wait if it ends now.
  auto ended = [&](const Waiter& waiter) -> std::optional<Status> {
    if (!receive_status_.is_ok()) return receive_status_;  // nothing more can arrive: fail now, not at each deadline
    if (arrived_.erase(waiter.reservation) > 0) return Status::ok();
    if (now < waiter.deadline) return std::nullopt;
    ++counters_.timed_out;
    return deadline_exceeded("the KV of reservation " + std::to_string(waiter.reservation) +
                             " did not arrive from its prefill node in time");
  };
  std::erase_if(waiters_, [&](Waiter& waiter) {
    std::optional<Status> result = ended(waiter);
    if (result.has_value()) resolved.emplace_back(std::move(waiter.landed), std::move(*result));
    return result.has_value();
  });
  std::erase_if(arrived_, [now](const auto& entry) { return now - entry.second > kRetention; });
  return resolved;
}

}  // namespace recgpt::decode
