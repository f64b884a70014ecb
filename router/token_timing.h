// When a call's generated tokens reached the router, for its latency metrics: the time to the first token and
// the mean time per output token after it (as vLLM's time_per_output_token: (last - first) / (tokens - 1); the
// tokens arrive in chunks, so a chunk's tokens count as arriving together).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace recgpt::router {

class TokenTiming {
 public:
  using Clock = std::chrono::steady_clock;

  explicit TokenTiming(Clock::time_point start) : start_(start) {}

  void arrived(size_t tokens, Clock::time_point now = Clock::now()) {
    if (tokens == 0) return;
    if (!first_) first_ = now;
    last_ = now;
    tokens_ += static_cast<int64_t>(tokens);
  }

  bool any() const { return first_.has_value(); }
  // Seconds from the start to the first token; nullopt before one arrived.
  std::optional<double> first_token_seconds() const {
    if (!first_) return std::nullopt;
    return std::chrono::duration<double>(*first_ - start_).count();
  }
  // Mean seconds between the tokens after the first; nullopt with fewer than two.
  std::optional<double> per_output_token_seconds() const {
    if (!first_ || tokens_ < 2) return std::nullopt;
    return std::chrono::duration<double>(last_ - *first_).count() / static_cast<double>(tokens_ - 1);
  }

 private:
  Clock::time_point start_;
  std::optional<Clock::time_point> first_;
  Clock::time_point last_{};
  int64_t tokens_ = 0;
};

}  // namespace recgpt::router
