// The serving benchmarks' open-loop load: requests start at Poisson arrival times, however many are still in
// flight (a closed loop would slow its own arrivals down as the server slows, hiding queueing).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace recgpt::bench {

// Arrival times (seconds from the start) of a Poisson process of `rate` per second over `duration` seconds.
inline std::vector<double> poisson_arrivals(double rate, double duration, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::exponential_distribution<double> gap(rate);
  std::vector<double> arrivals;
  for (double t = gap(random); t < duration; t += gap(random)) arrivals.push_back(t);
  return arrivals;
}

// Starts request i (`start(i)`) at arrivals[i] on a fresh io_context and returns every result once all ended.
template <typename Result>
std::vector<Result> run_open_loop(const std::vector<double>& arrivals,
                                  const std::function<boost::asio::awaitable<Result>(size_t)>& start) {
  namespace asio = boost::asio;
  using Clock = std::chrono::steady_clock;
  std::vector<Result> results(arrivals.size());
  asio::io_context io;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto executor = co_await asio::this_coro::executor;
        const auto begin = Clock::now();
        size_t outstanding = arrivals.size();
        asio::steady_timer all_done(executor, Clock::time_point::max());
        asio::steady_timer next(executor);
        for (size_t i = 0; i < arrivals.size(); ++i) {
          next.expires_at(begin +
                          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrivals[i])));
          co_await next.async_wait(asio::use_awaitable);
          asio::co_spawn(executor, start(i), [&, i](std::exception_ptr, Result result) {
            results[i] = std::move(result);
            if (--outstanding == 0) all_done.cancel();
          });
        }
        boost::system::error_code ignored;
        if (outstanding > 0) co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      },
      asio::detached);
  io.run();
  return results;
}

}  // namespace recgpt::bench
