// How long tests wait, stretched for slow builds: RECGPT_TEST_TIME_SCALE=N (at least 1; the tsan and asan test
// presets set it) multiplies the fixtures' waits for something to happen (a child's first line, a condition, a
// stream's end, curl's default --max-time). The product's own deadlines, and the ones a test sets on purpose
// (a request's timeout, a client that hangs up after 1 s), stay as they are.
#pragma once

#include <chrono>
#include <cstdlib>

namespace recgpt::testing {

inline double time_scale() {
  static const double scale = [] {
    const char* text = std::getenv("RECGPT_TEST_TIME_SCALE");
    const double value = text != nullptr ? std::strtod(text, nullptr) : 1.0;
    return value >= 1.0 ? value : 1.0;  // unset, malformed or below 1: no stretch
  }();
  return scale;
}

template <typename Rep, typename Period>
std::chrono::milliseconds scaled(std::chrono::duration<Rep, Period> wait) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double, std::milli>(
      std::chrono::duration<double, std::milli>(wait).count() * time_scale()));
}

}  // namespace recgpt::testing
