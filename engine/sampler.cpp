#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace recgpt {
namespace {

// Most likely first; equal logits by lower token id, so every order is total and deterministic.
bool more_likely(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

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
  if (*std::max_element(logits.begin(), logits.end()) == -std::numeric_limits<float>::infinity()) {
    return 0;  // everything masked: nothing is more likely than anything else
  }
  const bool truncates =
      (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < logits.size()) || params_.top_p < 1.0f;
  if (!truncates) return draw_from_all(logits);
  select_candidates(logits);
  return draw_from_candidates();
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

void Sampler::select_candidates(std::span<const float> logits) {
  const size_t vocab = logits.size();
  candidates_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};

  size_t kept = vocab;
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab) {
    kept = static_cast<size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + kept, candidates_.end(), more_likely);
    candidates_.resize(kept);
  }
  if (params_.top_p >= 1.0f) return;

  // Probabilities are relative to everything top-k kept.
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const auto& candidate : candidates_) max_logit = std::max(max_logit, candidate.first);
  double total = 0;
  for (const auto& candidate : candidates_) total += std::exp(static_cast<double>(candidate.first - max_logit));
  const double threshold = static_cast<double>(params_.top_p) * total;

  // Sort a head of the candidates, growing it until it holds top_p of the mass: with a peaked
  // distribution the whole vocabulary is never sorted.
  size_t head = kept < vocab ? kept : std::min<size_t>(vocab, 64);
  while (true) {
    if (head < candidates_.size()) {
      std::partial_sort(candidates_.begin(), candidates_.begin() + head, candidates_.end(), more_likely);
    } else if (kept == vocab) {
      std::sort(candidates_.begin(), candidates_.end(), more_likely);
    }
    double cumulative = 0;
    for (size_t i = 0; i < head; ++i) {
      cumulative += std::exp(static_cast<double>(candidates_[i].first - max_logit));
      if (cumulative >= threshold) {
        candidates_.resize(i + 1);
        return;
      }
    }
    if (head >= candidates_.size()) return;  // rounding: keep everything
    head = std::min(candidates_.size(), head * 4);
  }
}

int32_t Sampler::draw_from_candidates() {
  float max_logit = candidates_.front().first;  // sorted, most likely first
  double total = 0;
  for (const auto& candidate : candidates_) total += std::exp(static_cast<double>(candidate.first - max_logit));
  const double target = next_uniform() * total;
  double cumulative = 0;
  int32_t last_possible = candidates_.front().second;
  for (const auto& candidate : candidates_) {
    double weight = std::exp(static_cast<double>(candidate.first - max_logit));
    if (weight <= 0) continue;
    cumulative += weight;
    last_possible = candidate.second;
    if (cumulative > target) return candidate.second;
  }
  return last_possible;
}

int32_t Sampler::draw_from_all(std::span<const float> logits) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double total = 0;
  for (float logit : logits) total += std::exp(static_cast<double>(logit - max_logit));
  const double target = next_uniform() * total;
  double cumulative = 0;
  int32_t last_possible = argmax_lowest_id(logits);
  for (size_t i = 0; i < logits.size(); ++i) {
    double weight = std::exp(static_cast<double>(logits[i] - max_logit));
    if (weight <= 0) continue;
    cumulative += weight;
    last_possible = static_cast<int32_t>(i);
    if (cumulative > target) return last_possible;
  }
  return last_possible;
}

double Sampler::next_uniform() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

}  // namespace recgpt
