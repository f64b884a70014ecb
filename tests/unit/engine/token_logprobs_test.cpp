// LogprobRecorder against a direct long-double log-softmax and a full sort of the row.
#include "engine/token_logprobs.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace recgpt {
namespace {

TEST_CASE("logprobs are the raw row's log-softmax with its most likely tokens first") {
  std::mt19937_64 random(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> row(152'000);
  for (float& logit : row) logit = normal(random);
  row[777] = row[778] = 40.0f;  // two equally likely leaders: the lower id first
  row[5] = -std::numeric_limits<float>::infinity();
  long double total = 0;
  for (float logit : row) total += std::exp(static_cast<long double>(logit) - 40.0L);
  const long double log_total = 40.0L + std::log(total);
  std::vector<int32_t> order(row.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });

  const std::vector<float> raw = row;
  auto expected = [&](int32_t token) { return static_cast<double>(static_cast<long double>(raw[token]) - log_total); };

  LogprobRecorder recorder;
  recorder.record(row);
  row.assign(row.size(), 0.0f);  // the recorder holds its own copy: the caller goes on to mask and sample
  const TokenLogprobs read = recorder.read(123, 20);
  CHECK(read.logprob == Approx(expected(123)).margin(1e-4));
  REQUIRE(read.top.size() == 20);
  CHECK(read.top[0].token == 777);
  CHECK(read.top[1].token == 778);
  CHECK(read.top[0].logprob == Approx(expected(777)).margin(1e-4));
  for (size_t i = 0; i < read.top.size(); ++i) {
    CHECK(read.top[i].token == order[i]);
    CHECK(read.top[i].logprob == Approx(expected(order[i])).margin(1e-4));
  }
  CHECK(recorder.read(5, 0).logprob == -std::numeric_limits<float>::infinity());
  CHECK(recorder.read(5, 0).top.empty());
}

}  // namespace
}  // namespace recgpt
