// TokenTiming: time to first token and mean time per output token from chunk arrivals.
#include "router/token_timing.h"

#include <catch2/catch.hpp>

namespace recgpt::router {
namespace {

using std::chrono::milliseconds;

TEST_CASE("token timing: first token from the start, then the mean gap over the tokens after it", "[router][metrics]") {
  const auto start = TokenTiming::Clock::now();
  TokenTiming timing(start);
  CHECK_FALSE(timing.any());
  CHECK_FALSE(timing.first_token_seconds());
  timing.arrived(0, start + milliseconds(5));  // an empty chunk is no token
  CHECK_FALSE(timing.any());
  timing.arrived(1, start + milliseconds(40));
  CHECK(timing.first_token_seconds() == Approx(0.040));
  CHECK_FALSE(timing.per_output_token_seconds());  // one token: no gap yet
  timing.arrived(3, start + milliseconds(100));    // a chunk of three after 60 ms
  timing.arrived(1, start + milliseconds(120));
  CHECK(timing.first_token_seconds() == Approx(0.040));
  CHECK(timing.per_output_token_seconds() == Approx(0.080 / 4));  // 5 tokens: 4 gaps over 80 ms
}

TEST_CASE("token timing: a first chunk of several tokens counts them as arriving together", "[router][metrics]") {
  const auto start = TokenTiming::Clock::now();
  TokenTiming timing(start);
  timing.arrived(4, start + milliseconds(10));
  CHECK(timing.per_output_token_seconds() == Approx(0.0));
}

}  // namespace
}  // namespace recgpt::router
