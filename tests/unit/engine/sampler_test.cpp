#include "engine/sampler.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <vector>

namespace recgpt {
namespace {

int32_t sample_once(const SamplingParams& params, std::vector<float> logits, std::vector<int32_t> previous = {}) {
  Sampler sampler(params);
  return sampler.sample(logits, previous);
}

std::vector<int32_t> draw(const SamplingParams& params, const std::vector<float>& logits, int count) {
  Sampler sampler(params);
  std::vector<int32_t> tokens;
  for (int i = 0; i < count; ++i) {
    std::vector<float> copy = logits;
    tokens.push_back(sampler.sample(copy, {}));
  }
  return tokens;
}

std::vector<float> random_logits(size_t vocab, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(vocab);
  for (float& logit : logits) logit = normal(random);
  return logits;
}

TEST_CASE("invalid sampling params are kInvalidArgument naming the field") {
  auto message_of = [](SamplingParams params) { return params.validate().message(); };
  CHECK(SamplingParams{}.validate().is_ok());
  CHECK_THAT(message_of({.temperature = -0.5f}), Catch::Contains("temperature"));
  CHECK_THAT(message_of({.top_k = -1}), Catch::Contains("top_k"));
  CHECK_THAT(message_of({.top_p = 0.0f}), Catch::Contains("top_p"));
  CHECK_THAT(message_of({.top_p = 1.5f}), Catch::Contains("top_p"));
  CHECK_THAT(message_of({.repetition_penalty = 0.0f}), Catch::Contains("repetition_penalty"));
  CHECK_THAT(message_of({.first_draw = SamplingParams::kMaxFirstDraw + 1}), Catch::Contains("first_draw"));
  CHECK(SamplingParams{.temperature = std::nanf("")}.validate().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(message_of({.frequency_penalty = 2.5f}), Catch::Contains("frequency_penalty"));
  CHECK_THAT(message_of({.presence_penalty = -2.01f}), Catch::Contains("presence_penalty"));
  CHECK_THAT(message_of({.presence_penalty = std::nanf("")}), Catch::Contains("presence_penalty"));
  CHECK_THAT(message_of({.logprobs = true, .top_logprobs = 21}), Catch::Contains("top_logprobs"));
  CHECK_THAT(message_of({.top_logprobs = 2}), Catch::Contains("needs logprobs"));
  CHECK_THAT(message_of({.min_tokens = -1}), Catch::Contains("min_tokens"));
  CHECK_THAT(message_of({.min_tokens = SamplingParams::kMaxMinTokens + 1}), Catch::Contains("min_tokens"));
  CHECK(SamplingParams{.frequency_penalty = -2, .presence_penalty = 2, .logprobs = true, .top_logprobs = 20}
            .validate()
            .is_ok());
}

TEST_CASE("min_tokens masks the stop tokens until that many tokens were generated") {
  const auto masked = [](uint64_t next_index, int min_tokens) {
    std::vector<float> row(8, 1.0f);
    const std::vector<int32_t> stops = {2, 5, 99};  // 99 is outside the row: ignored
    mask_early_stop_tokens(row, stops, next_index, min_tokens);
    return std::vector<bool>{std::isinf(row[2]), std::isinf(row[5]), std::isinf(row[0])};
  };
  CHECK(masked(0, 0) == std::vector<bool>{false, false, false});
  CHECK(masked(0, 3) == std::vector<bool>{true, true, false});
  CHECK(masked(2, 3) == std::vector<bool>{true, true, false});
  CHECK(masked(3, 3) == std::vector<bool>{false, false, false});
}

TEST_CASE("logit_bias adds to the listed tokens' logits and is checked against the vocabulary") {
  std::vector<float> logits = {2.0f, 1.0f, 0.5f};
  Sampler sampler({.logit_bias = {{0, -100.0f}, {2, 1.75f}}});
  CHECK(sampler.sample(logits, {}) == 2);
  CHECK(logits == std::vector<float>{-98.0f, 1.0f, 2.25f});
  using Bias = std::vector<std::pair<int32_t, float>>;
  auto message_of = [](Bias bias, int64_t vocab = 1 << 20) {
    return SamplingParams{.logit_bias = std::move(bias)}.validate(vocab).message();
  };
  CHECK(SamplingParams{.logit_bias = {{3, 1.0f}}}.validate(4).is_ok());
  CHECK_THAT(message_of({{3, 1.0f}}, 3), Catch::Contains("outside the vocabulary"));
  CHECK_THAT(message_of({{1, 100.5f}}), Catch::Contains("[-100, 100]"));
  CHECK_THAT(message_of({{1, std::nanf("")}}), Catch::Contains("[-100, 100]"));
  CHECK_THAT(message_of({{-1, 1.0f}}), Catch::Contains("negative"));
  CHECK_THAT(message_of({{1, 1.0f}, {1, 2.0f}}), Catch::Contains("twice"));
  Bias many(SamplingParams::kMaxLogitBiasTokens + 1);
  for (size_t i = 0; i < many.size(); ++i) many[i] = {static_cast<int32_t>(i), 1.0f};
  CHECK_THAT(message_of(many), Catch::Contains("at most"));
}

TEST_CASE("frequency and presence penalties count generated tokens only, as OpenAI defines them") {
  // Prompt {0, 0, 1}, then tokens {2, 2, 3} generated before this sampler (first_draw 3: e.g. on a node that died).
  std::vector<int32_t> previous = {0, 0, 1, 2, 2, 3};
  Sampler sampler({.frequency_penalty = 0.5f, .presence_penalty = 0.25f, .first_draw = 3});
  std::vector<float> logits(5, 1.0f);
  CHECK(sampler.sample(logits, previous) == 0);  // greedy: the row keeps the penalties applied
  CHECK(logits == std::vector<float>{1.0f, 1.0f, 1.0f - 2 * 0.5f - 0.25f, 1.0f - 0.5f - 0.25f, 1.0f});
  // The next call counts the token just generated too.
  previous.push_back(2);
  logits.assign(5, 1.0f);
  sampler.sample(logits, previous);
  CHECK(logits[2] == 1.0f - 3 * 0.5f - 0.25f);
  CHECK(logits[0] == 1.0f);
  // They move the argmax; a negative penalty favours repeating.
  CHECK(sample_once({.frequency_penalty = 0.6f, .first_draw = 2}, {2.0f, 1.0f}, {1, 0, 0}) == 1);
  CHECK(sample_once({.presence_penalty = -1.5f, .first_draw = 1}, {2.0f, 1.0f}, {0, 1}) == 1);
  // A fresh sequence's first token has no generated tokens to penalise.
  CHECK(sample_once({.frequency_penalty = 2.0f, .presence_penalty = 2.0f}, {2.0f, 1.0f}, {0, 0, 0}) == 0);
}

TEST_CASE("greedy sampling is the argmax, lowest id on ties") {
  CHECK(sample_once({}, {0.1f, 2.0f, -1.0f, 1.9f}) == 1);
  CHECK(sample_once({}, {3.0f, 1.0f, 3.0f}) == 0);
  CHECK(sample_once({}, {-1.0f, 5.0f, 5.0f}) == 1);
  std::vector<float> big = random_logits(152'000, 5);
  int32_t expected = static_cast<int32_t>(std::max_element(big.begin(), big.end()) - big.begin());
  CHECK(sample_once({}, big) == expected);
}

TEST_CASE("top_k = 1 is greedy whatever the temperature") {
  std::vector<float> logits = random_logits(1000, 9);
  int32_t argmax = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (uint64_t seed = 0; seed < 20; ++seed) {
    CHECK(sample_once({.temperature = 5.0f, .top_k = 1, .seed = seed}, logits) == argmax);
  }
}

TEST_CASE("the same seed gives the same tokens, another seed other tokens") {
  std::vector<float> logits = random_logits(5000, 11);
  SamplingParams params{.temperature = 1.0f, .top_k = 50, .top_p = 0.95f, .seed = 42};
  std::vector<int32_t> first = draw(params, logits, 64);
  CHECK(draw(params, logits, 64) == first);
  params.seed = 43;
  CHECK(draw(params, logits, 64) != first);
}

TEST_CASE("a sampler from first_draw k draws the tokens a sequence's sampler draws from its k-th token on") {
  // Rows differ per token, and one of them masks everything (no draw is made, an output is still used).
  std::vector<std::vector<float>> rows;
  for (uint64_t i = 0; i < 12; ++i) rows.push_back(random_logits(3000, 100 + i));
  std::fill(rows[3].begin(), rows[3].end(), -std::numeric_limits<float>::infinity());
  for (const SamplingParams& base :
       {SamplingParams{.temperature = 0.9f, .seed = 7}, SamplingParams{.temperature = 1.2f, .top_k = 40, .seed = 8},
        SamplingParams{.temperature = 0.7f, .top_p = 0.9f, .seed = 9}}) {
    Sampler whole(base);
    std::vector<int32_t> tokens;
    for (const std::vector<float>& row : rows) {
      std::vector<float> copy = row;
      tokens.push_back(whole.sample(copy, {}));
    }
    for (uint64_t k : {1, 3, 4, 9}) {
      SamplingParams later = base;
      later.first_draw = k;
      Sampler continued(later);
      for (size_t i = k; i < rows.size(); ++i) {
        std::vector<float> copy = rows[i];
        INFO("temperature " << base.temperature << ", first_draw " << k << ", token " << i);
        CHECK(continued.sample(copy, {}) == tokens[i]);
      }
    }
  }
}

// Chi-square statistic of observed counts against expected probabilities.
double chi_square(const std::vector<int>& counts, const std::vector<double>& probabilities, int total) {
  double statistic = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    double expected = probabilities[i] * total;
    statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return statistic;
}

std::vector<double> softmax(const std::vector<float>& logits, float temperature) {
  std::vector<double> probabilities;
  double total = 0;
  for (float logit : logits) total += std::exp(logit / temperature);
  for (float logit : logits) probabilities.push_back(std::exp(logit / temperature) / total);
  return probabilities;
}

TEST_CASE("temperature sampling follows the softmax distribution") {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -1.0f};
  constexpr int kDraws = 60'000;
  for (float temperature : {0.7f, 1.0f, 1.8f}) {
    std::vector<int> counts(logits.size(), 0);
    for (int32_t token : draw({.temperature = temperature, .seed = 17}, logits, kDraws)) ++counts[token];
    // 5 degrees of freedom: P(chi2 > 20.5) = 0.001.
    CHECK(chi_square(counts, softmax(logits, temperature), kDraws) < 20.5);
  }
}

TEST_CASE("top-k renormalizes over the k most likely tokens") {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 2.5f, 0.0f};
  constexpr int kDraws = 30'000;
  std::vector<int> counts(logits.size(), 0);
  for (int32_t token : draw({.temperature = 1.0f, .top_k = 3, .seed = 3}, logits, kDraws)) ++counts[token];
  CHECK(counts[0] == 0);
  CHECK(counts[4] == 0);
  std::vector<double> kept = softmax({3.0f, 2.0f, 2.5f}, 1.0f);
  CHECK(chi_square({counts[1], counts[2], counts[3]}, kept, kDraws) < 13.8);  // 2 dof, p = 0.001
}

TEST_CASE("top-p keeps the smallest head holding top_p of the mass and cuts the tail") {
  // Probabilities 0.5, 0.25, 0.125, 0.0625, ...: top_p 0.7 keeps the first two only.
  std::vector<float> logits;
  for (int i = 0; i < 12; ++i) logits.push_back(-0.693147f * static_cast<float>(i));
  std::vector<int> counts(logits.size(), 0);
  for (int32_t token : draw({.temperature = 1.0f, .top_p = 0.7f, .seed = 5}, logits, 20'000)) ++counts[token];
  CHECK(counts[0] > 0);
  CHECK(counts[1] > 0);
  for (size_t i = 2; i < counts.size(); ++i) CHECK(counts[i] == 0);
  CHECK(std::abs(counts[0] / 20'000.0 - 2.0 / 3.0) < 0.02);

  // A tiny top_p still keeps one token.
  for (int32_t token : draw({.temperature = 1.0f, .top_p = 1e-6f, .seed = 5}, logits, 100)) CHECK(token == 0);
}

TEST_CASE("top-p over a large flat vocabulary never draws outside the nucleus") {
  std::vector<float> logits = random_logits(152'000, 21);
  SamplingParams params{.temperature = 1.0f, .top_p = 0.9f, .seed = 8};
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  std::vector<double> probabilities = softmax(sorted, 1.0f);
  double cumulative = 0;
  size_t nucleus = 0;
  while (cumulative < 0.9) cumulative += probabilities[nucleus++];
  const float smallest_kept = sorted[nucleus - 1];
  for (int32_t token : draw(params, logits, 200)) CHECK(logits[token] >= smallest_kept);
}

// Rows of a real vocabulary's size, which the sampler takes in blocks (sampler.cpp): answers in any block, ties
// across blocks, the partial last block.
TEST_CASE("greedy over a full vocabulary row finds the lowest-id maximum in any block") {
  const float masked = -std::numeric_limits<float>::infinity();
  std::vector<float> logits = random_logits(151'936, 31);
  for (int32_t best : {0, 2047, 2048, 77'777, 151'935}) {
    std::vector<float> row = logits;
    row[best] = 50.0f;
    CHECK(sample_once({}, row) == best);
  }
  std::vector<float> row = logits;
  row[140'000] = row[9'000] = row[100'000] = 50.0f;  // ties in three blocks
  CHECK(sample_once({}, row) == 9'000);
  row[3] = std::numeric_limits<float>::quiet_NaN();  // passed over
  CHECK(sample_once({}, row) == 9'000);
  CHECK(sample_once({}, std::vector<float>(5'000, masked)) == 0);
}

TEST_CASE("top-k over a full vocabulary row keeps the k most likely, lower ids first among equals") {
  std::vector<float> logits(151'936, -5.0f);
  // Tokens spread over the row, one heavier than the rest; the boundary logit 2.0 held by more tokens than k has
  // room for: the lower ids among them are kept.
  for (int32_t token : {10, 4'000, 70'000, 150'000}) logits[token] = 2.0f;
  logits[90'000] = 3.0f;
  std::vector<int> counts(logits.size(), 0);
  for (int32_t token : draw({.temperature = 1.0f, .top_k = 3, .seed = 4}, logits, 6'000)) ++counts[token];
  CHECK(counts[90'000] + counts[10] + counts[4'000] == 6'000);
  // exp(3) : exp(2) : exp(2), 2 dof, p = 0.001.
  CHECK(chi_square({counts[90'000], counts[10], counts[4'000]}, softmax({3.0f, 2.0f, 2.0f}, 1.0f), 6'000) < 13.8);
}

TEST_CASE("top-p over a full vocabulary row keeps exactly the nucleus, lower ids first among equals") {
  // Ten tokens of weight 1 and ten of weight e^-0.5 = 0.607, spread over the row; the rest weigh e^-30. Top-p 0.9
  // of 16.07 needs 14.46: the ten heavy ones (10.0) and the eight lowest-id light ones (10 + 8 x 0.607 = 14.85;
  // seven reach only 14.25).
  std::vector<float> logits(151'936, -30.0f);
  std::vector<int32_t> heavy, light;
  for (int32_t i = 0; i < 10; ++i) {
    heavy.push_back(100 + i * 15'000);
    light.push_back(7'000 + i * 14'000);
  }
  for (int32_t token : heavy) logits[token] = 0.0f;
  for (int32_t token : light) logits[token] = -0.5f;
  std::map<int32_t, int> counts;
  constexpr int kDraws = 20'000;
  for (int32_t token : draw({.temperature = 1.0f, .top_p = 0.9f, .seed = 6}, logits, kDraws)) ++counts[token];
  std::vector<int> observed;
  std::vector<double> expected;
  const double kept = 10 + 8 * std::exp(-0.5);
  for (int32_t token : heavy) {
    observed.push_back(counts[token]);
    expected.push_back(1 / kept);
  }
  for (int i = 0; i < 8; ++i) {
    observed.push_back(counts[light[i]]);
    expected.push_back(std::exp(-0.5) / kept);
  }
  CHECK(counts[light[8]] == 0);
  CHECK(counts[light[9]] == 0);
  CHECK(std::accumulate(observed.begin(), observed.end(), 0) == kDraws);
  CHECK(chi_square(observed, expected, kDraws) < 40.8);  // 17 dof, p = 0.001
}

TEST_CASE("temperature over a full vocabulary row draws tokens from any block by their softmax") {
  // Heavy tokens in the first, a middle and the last, partial block; the other 151,933 weigh ~e^-20 each, under
  // 0.1% of the mass together, counted as a fourth outcome.
  std::vector<float> logits(151'936, -10.0f);
  logits[5] = 10.0f;
  logits[75'000] = 10.5f;
  logits[151'935] = 9.5f;
  std::vector<int> counts(4, 0);
  constexpr int kDraws = 20'000;
  for (int32_t token : draw({.temperature = 1.0f, .seed = 12}, logits, kDraws)) {
    ++counts[token == 5 ? 0 : token == 75'000 ? 1 : token == 151'935 ? 2 : 3];
  }
  std::vector<double> expected = softmax({10.0f, 10.5f, 9.5f}, 1.0f);
  const double rest = 151'933 * std::exp(-20.0) * expected[0];
  for (double& p : expected) p *= 1.0 - rest;
  expected.push_back(rest);
  CHECK(counts[3] < 60);  // ~0.1% expected: 20 draws
  CHECK(chi_square({counts[0], counts[1], counts[2]}, {expected[0], expected[1], expected[2]}, kDraws) < 13.8);
}

TEST_CASE("repetition penalty changes the argmax as Hugging Face does") {
  // Positive logits are divided: token 0 (3.0 -> 1.5) loses to token 1 (2.0).
  CHECK(sample_once({.repetition_penalty = 2.0f}, {3.0f, 2.0f, 0.5f}, {0}) == 1);
  // Negative logits are multiplied: token 1 (-1 -> -2) loses to token 2 (-1.5).
  CHECK(sample_once({.repetition_penalty = 2.0f}, {-3.0f, -1.0f, -1.5f}, {1}) == 2);
  // A repeated token is penalized once, not once per occurrence: 3.0 / 2 = 1.5 still beats 1.4.
  CHECK(sample_once({.repetition_penalty = 2.0f}, {3.0f, 1.4f}, {0, 0, 0}) == 0);

  std::vector<float> logits = {3.0f, -1.0f, 0.5f};
  std::vector<int32_t> previous = {0, 1, 0};
  Sampler sampler({.repetition_penalty = 2.0f});
  sampler.sample(logits, previous);
  CHECK(logits == std::vector<float>{1.5f, -2.0f, 0.5f});
}

TEST_CASE("masked (-inf) tokens are never drawn") {
  const float masked = -std::numeric_limits<float>::infinity();
  std::vector<float> logits = {masked, 0.0f, masked, 0.1f, masked};
  for (SamplingParams params :
       {SamplingParams{.temperature = 2.0f, .seed = 1}, SamplingParams{.temperature = 2.0f, .top_k = 4, .seed = 1},
        SamplingParams{.temperature = 2.0f, .top_p = 0.99f, .seed = 1}}) {
    for (int32_t token : draw(params, logits, 500)) CHECK((token == 1 || token == 3));
  }
  CHECK(sample_once({.temperature = 1.0f}, {masked, masked}) == 0);
}

}  // namespace
}  // namespace recgpt
