#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace recgpt {
namespace {

// Most likely first; equal logits by lower token id, so every order is total and deterministic.
// A lambda rather than a function, so that the standard algorithms inline it.
constexpr auto more_likely = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
};

// Less likely than any (logit, token): a draw bounded by it keeps every token.
constexpr std::pair<float, int32_t> kKeepAll = {-std::numeric_limits<float>::infinity(),
                                                std::numeric_limits<int32_t>::max()};

int32_t argmax_lowest_id(std::span<const float> logits) {
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

}  // namespace

Status SamplingParams::validate() const {
  if (!(std::isfinite(temperature) && temperature >= 0)) {
    return invalid_argument("sampling temperature must be >= 0, got " + std::to_string(temperature));
  }
  if (top_k < 0) return invalid_argument("sampling top_k must be >= 0 (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) {
    return invalid_argument("sampling top_p must be in (0, 1], got " + std::to_string(top_p));
  }
  if (!(std::isfinite(repetition_penalty) && repetition_penalty > 0)) {
    return invalid_argument("sampling repetition_penalty must be > 0, got " + std::to_string(repetition_penalty));
  }
  return Status::ok();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), random_(params.seed) {
  RECGPT_CHECK_MSG(params.validate().is_ok(), params.validate().message());
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> previous_tokens) {
  RECGPT_CHECK_MSG(!logits.empty(), "sample() needs a non-empty vocabulary");
  if (params_.repetition_penalty != 1.0f) apply_repetition_penalty(logits, previous_tokens);
  if (params_.temperature == 0.0f || params_.top_k == 1) return argmax_lowest_id(logits);

  const float inverse_temperature = 1.0f / params_.temperature;
  for (float& logit : logits) logit *= inverse_temperature;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  if (max_logit == -std::numeric_limits<float>::infinity()) {
    return 0;  // everything masked: nothing is more likely than anything else
  }
  // Unnormalized probabilities, computed once: selection and the draw only compare and add them.
  weights_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) weights_[i] = std::exp(logits[i] - max_logit);
  const bool truncates =
      (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < logits.size()) || params_.top_p < 1.0f;
  return draw(logits, truncates ? least_likely_kept(logits) : kKeepAll);
}

void Sampler::apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> previous_tokens) {
  // Read every penalized value before writing any, so a token repeated in the history is penalized once
  // (Hugging Face's gather / scatter).
  penalized_.resize(previous_tokens.size());
  const float penalty = params_.repetition_penalty;
  for (size_t i = 0; i < previous_tokens.size(); ++i) {
    int32_t token = previous_tokens[i];
    RECGPT_CHECK_MSG(token >= 0 && static_cast<size_t>(token) < logits.size(),
                     "previous token " + std::to_string(token) + " outside the vocabulary");
    float logit = logits[token];
    penalized_[i] = logit > 0 ? logit / penalty : logit * penalty;
  }
  for (size_t i = 0; i < previous_tokens.size(); ++i) logits[previous_tokens[i]] = penalized_[i];
}

Sampler::Candidate Sampler::least_likely_kept(std::span<const float> logits) {
  const size_t vocab = logits.size();
  candidates_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab) {
    auto kth = candidates_.begin() + (params_.top_k - 1);
    std::nth_element(candidates_.begin(), kth, candidates_.end(), more_likely);
    candidates_.resize(static_cast<size_t>(params_.top_k));
  }
  if (params_.top_p < 1.0f) keep_nucleus();
  return *std::max_element(candidates_.begin(), candidates_.end(), more_likely);  // the "largest" = least likely
}

void Sampler::keep_nucleus() {
  // Probabilities are relative to the candidates (what top-k kept).
  auto weight = [this](const Candidate& candidate) { return static_cast<double>(weights_[candidate.second]); };
  double total = 0;
  for (const Candidate& candidate : candidates_) total += weight(candidate);

  // A token lighter than (1 - top_p) * total / n cannot be in the nucleus: all such tokens together weigh
  // at most (1 - top_p) of the mass, so the heavier ones alone already reach top_p. Cheap, and with a
  // peaked distribution it leaves only a handful of candidates.
  const double lightest_possible = (1.0 - params_.top_p) * total / static_cast<double>(candidates_.size());
  std::erase_if(candidates_, [&](const Candidate& candidate) { return weight(candidate) < lightest_possible; });

  // Quickselect by mass: candidates_[0, low) are the most likely and hold less than top_p of the mass;
  // the boundary token lies in [low, high). Expected O(n), against O(n log n) for sorting.
  double needed = static_cast<double>(params_.top_p) * total;
  size_t low = 0;
  size_t high = candidates_.size();
  auto begin = candidates_.begin();
  while (high - low > 64) {
    size_t middle = low + (high - low) / 2;
    std::nth_element(begin + low, begin + middle, begin + high, more_likely);
    double upper_mass = 0;
    for (size_t i = low; i <= middle; ++i) upper_mass += weight(candidates_[i]);
    if (upper_mass >= needed) {
      high = middle + 1;
    } else {
      needed -= upper_mass;
      low = middle + 1;
    }
  }
  std::sort(begin + low, begin + high, more_likely);
  for (size_t i = low; i < high; ++i) {
    needed -= weight(candidates_[i]);
    if (needed <= 0) {
      high = i + 1;
      break;
    }
  }
  candidates_.resize(std::max<size_t>(high, 1));  // rounding short of top_p keeps everything up to high
}

int32_t Sampler::draw(std::span<const float> logits, Candidate least_likely) {
  // Draws in token id order over every token at least as likely as `least_likely`, so the result does not
  // depend on how selection arranged the candidates.
  auto kept = [&](size_t token) { return !more_likely(least_likely, {logits[token], static_cast<int32_t>(token)}); };
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (kept(i)) total += weights_[i];
  }
  const double target = next_uniform() * total;
  double cumulative = 0;
  int32_t last_possible = argmax_lowest_id(logits);
  for (size_t i = 0; i < logits.size(); ++i) {
    if (weights_[i] <= 0 || !kept(i)) continue;
    cumulative += weights_[i];
    last_possible = static_cast<int32_t>(i);
    if (cumulative > target) return last_possible;
  }
  return last_possible;
}

double Sampler::next_uniform() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

}  // namespace recgpt
