#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "engine/cpu/ops.h"

namespace recgpt {
namespace {

// Most likely first; equal logits by lower token id, so every order is total and deterministic.
// A lambda rather than a function, so that the standard algorithms inline it.
constexpr auto more_likely = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
};

// Rows are taken in blocks: a block's maximum or weight sum comes from one vector pass (engine/cpu/ops.h), and
// only the block that holds the answer is read element by element.
constexpr size_t kBlock = 2048;

size_t blocks_of(size_t vocab) { return (vocab + kBlock - 1) / kBlock; }

// Up to this many kept tokens are sorted by id for the draw; more are found again by a walk over the row.
constexpr size_t kMostSortedCandidates = 2048;

int32_t argmax_lowest_id(std::span<const float> logits) {
  size_t best_block = 0;
  float best = -std::numeric_limits<float>::infinity();
  for (size_t block = 0; block < blocks_of(logits.size()); ++block) {
    const size_t begin = block * kBlock;
    const float block_max = max_value(logits.data() + begin, std::min(kBlock, logits.size() - begin));
    if (block_max > best) {
      best = block_max;
      best_block = block;
    }
  }
  const size_t end = std::min(logits.size(), (best_block + 1) * kBlock);
  for (size_t i = best_block * kBlock; i < end; ++i) {
    if (logits[i] == best) return static_cast<int32_t>(i);
  }
  return 0;  // the first block all NaN, and nothing anywhere above -inf
}

}  // namespace

void mask_early_stop_tokens(std::span<float> logits, std::span<const int32_t> stop_tokens, uint64_t next_index,
                            int min_tokens) {
  if (min_tokens <= 0 || next_index >= static_cast<uint64_t>(min_tokens)) return;
  for (int32_t stop : stop_tokens) {
    if (stop >= 0 && static_cast<size_t>(stop) < logits.size()) {
      logits[static_cast<size_t>(stop)] = -std::numeric_limits<float>::infinity();
    }
  }
}

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
  for (auto [name, value] :
       {std::pair{"frequency_penalty", frequency_penalty}, {"presence_penalty", presence_penalty}}) {
    if (!(value >= -kMaxPenalty && value <= kMaxPenalty)) {
      return invalid_argument(std::string("sampling ") + name + " must be in [-2, 2], got " + std::to_string(value));
    }
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return invalid_argument("sampling top_logprobs must be in [0, " + std::to_string(kMaxTopLogprobs) + "], got " +
                            std::to_string(top_logprobs));
  }
  if (top_logprobs > 0 && !logprobs) return invalid_argument("sampling top_logprobs needs logprobs");
  if (logit_bias.size() > kMaxLogitBiasTokens) {
    return invalid_argument("sampling logit_bias lists " + std::to_string(logit_bias.size()) + " tokens, at most " +
                            std::to_string(kMaxLogitBiasTokens));
  }
  std::vector<int32_t> biased;
  for (auto [token, bias] : logit_bias) {
    if (token < 0) return invalid_argument("sampling logit_bias token " + std::to_string(token) + " is negative");
    if (!(bias >= -kMaxLogitBias && bias <= kMaxLogitBias)) {
      return invalid_argument("sampling logit_bias of token " + std::to_string(token) +
                              " must be in [-100, 100], got " + std::to_string(bias));
    }
    biased.push_back(token);
  }
  std::sort(biased.begin(), biased.end());
  if (std::adjacent_find(biased.begin(), biased.end()) != biased.end()) {
    return invalid_argument("sampling logit_bias lists a token twice");
  }
  if (min_tokens < 0 || min_tokens > kMaxMinTokens) {
    return invalid_argument("sampling min_tokens must be in [0, " + std::to_string(kMaxMinTokens) + "], got " +
                            std::to_string(min_tokens));
  }
  if (first_draw > kMaxFirstDraw) {
    return invalid_argument("sampling first_draw must be at most " + std::to_string(kMaxFirstDraw) + ", got " +
                            std::to_string(first_draw));
  }
  return Status::ok();
}

Status SamplingParams::validate(int64_t vocab_size) const {
  RECGPT_RETURN_IF_ERROR(validate());
  for (auto [token, bias] : logit_bias) {
    if (token >= vocab_size) {
      return invalid_argument("sampling logit_bias token " + std::to_string(token) + " is outside the vocabulary of " +
                              std::to_string(vocab_size));
    }
  }
  return Status::ok();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), random_(params.seed) {
  RECGPT_CHECK_MSG(params.validate().is_ok(), params.validate().message());
  random_.discard(params.first_draw);
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> previous_tokens) {
  RECGPT_CHECK_MSG(!logits.empty(), "sample() needs a non-empty vocabulary");
  const double uniform = next_uniform();  // taken by every call: token i uses output first_draw + i
  for (auto [token, bias] : params_.logit_bias) {
    RECGPT_CHECK_MSG(static_cast<size_t>(token) < logits.size(),
                     "logit_bias token " + std::to_string(token) + " outside the vocabulary");
    logits[token] += bias;
  }
  if (params_.repetition_penalty != 1.0f) apply_repetition_penalty(logits, previous_tokens);
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    apply_output_penalties(logits, previous_tokens);
  }
  ++draws_;
  if (params_.temperature == 0.0f || params_.top_k == 1) return argmax_lowest_id(logits);

  const float inverse_temperature = 1.0f / params_.temperature;
  for (float& logit : logits) logit *= inverse_temperature;
  const float max_logit = max_value(logits.data(), static_cast<int64_t>(logits.size()));
  if (max_logit == -std::numeric_limits<float>::infinity()) {
    return 0;  // everything masked: nothing is more likely than anything else
  }
  // Unnormalized probabilities, computed once: selection and the draw only compare and add them.
  weights_.resize(logits.size());
  block_weights_.resize(blocks_of(logits.size()));
  double total = 0;
  for (size_t block = 0; block < block_weights_.size(); ++block) {
    const size_t begin = block * kBlock;
    block_weights_[block] =
        exp_shifted(logits.data() + begin, static_cast<int64_t>(std::min(kBlock, logits.size() - begin)), max_logit,
                    weights_.data() + begin);
    total += block_weights_[block];
  }
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < logits.size()) {
    select_top_k(logits);
  } else if (params_.top_p < 1.0f) {
    select_nucleus(logits, total);
  } else {
    return draw_from_all(total, uniform);
  }
  return draw_from_candidates(logits, uniform);
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

void Sampler::apply_output_penalties(std::span<float> logits, std::span<const int32_t> previous_tokens) {
  const size_t generated = static_cast<size_t>(std::min<uint64_t>(params_.first_draw + draws_, previous_tokens.size()));
  const size_t from = previous_tokens.size() - generated;
  if (from != counted_from_ || counted_until_ > previous_tokens.size()) {  // not the same sequence as before
    output_counts_.clear();
    counted_from_ = counted_until_ = from;
  }
  for (; counted_until_ < previous_tokens.size(); ++counted_until_) {
    const int32_t token = previous_tokens[counted_until_];
    RECGPT_CHECK_MSG(token >= 0 && static_cast<size_t>(token) < logits.size(),
                     "previous token " + std::to_string(token) + " outside the vocabulary");
    ++output_counts_[token];
  }
  for (auto [token, count] : output_counts_) {
    logits[token] -= params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
  }
}

void Sampler::select_top_k(std::span<const float> logits) {
  candidates_.clear();
  // The k most likely, as a heap whose front is the least likely of them: a token enters only when it is more
  // likely than that one, so most of the row costs one float comparison a token.
  const auto k = static_cast<size_t>(params_.top_k);
  float floor = -std::numeric_limits<float>::infinity();  // the front's logit, once the heap is full
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] < floor) continue;
    const Candidate candidate = {logits[i], static_cast<int32_t>(i)};
    if (candidates_.size() < k) {
      candidates_.push_back(candidate);
      std::push_heap(candidates_.begin(), candidates_.end(), more_likely);
      if (candidates_.size() == k) floor = candidates_.front().first;
    } else if (more_likely(candidate, candidates_.front())) {
      std::pop_heap(candidates_.begin(), candidates_.end(), more_likely);
      candidates_.back() = candidate;
      std::push_heap(candidates_.begin(), candidates_.end(), more_likely);
      floor = candidates_.front().first;
    }
  }
  if (params_.top_p < 1.0f) {
    double total = 0;
    for (const Candidate& candidate : candidates_) total += weights_[candidate.second];
    const double lightest_possible = nucleus_floor(total, candidates_.size());
    std::erase_if(candidates_,
                  [&](const Candidate& candidate) { return weights_[candidate.second] < lightest_possible; });
    keep_nucleus(static_cast<double>(params_.top_p) * total, 0);
  }
}

// A token lighter than (1 - top_p) * total / tokens cannot be in the nucleus: all such tokens together weigh at
// most (1 - top_p) of the mass, so the heavier ones alone already reach top_p.
double Sampler::nucleus_floor(double total, size_t tokens) const {
  return (1.0 - params_.top_p) * total / static_cast<double>(tokens);
}

void Sampler::select_nucleus(std::span<const float> logits, double total) {
  const auto size = static_cast<int64_t>(logits.size());
  const double needed = static_cast<double>(params_.top_p) * total;
  // t = 2^-k for the least k whose tokens (weight >= t) hold `needed`, by vector passes (weights lie in (0, 1]).
  // The passes add in float lanes: a margin of 1e-4 on what they must show, so that rounding can only lower t.
  // Down to 2^-k_max <= nucleus_floor, which the bound above says is enough.
  const double floor = nucleus_floor(total, logits.size());
  const int k_max = std::clamp(static_cast<int>(std::ceil(-std::log2(floor))), 0, 126);
  int low = 0, high = k_max;
  while (low < high) {
    const int middle = (low + high) / 2;
    if (mass_at_least(weights_.data(), size, std::ldexp(1.0f, -middle)) >= needed * (1 + 1e-4)) {
      high = middle;
    } else {
      low = middle + 1;
    }
  }
  // candidates_ = the tokens of weight >= `at_least`; returns their weight, in double as the draw adds it.
  auto take = [&](float at_least) {
    indices_.resize(logits.size());
    indices_.resize(static_cast<size_t>(indices_at_least(weights_.data(), size, at_least, indices_.data())));
    candidates_.clear();
    double mass = 0;
    for (int32_t token : indices_) {
      candidates_.push_back({logits[token], token});
      mass += weights_[token];
    }
    return mass;
  };
  const float threshold = std::ldexp(1.0f, -low);
  if (take(threshold) < needed) {  // the float passes misled the search: every token down to the bound
    take(std::nextafter(static_cast<float>(floor), 0.0f));
    keep_nucleus(needed, 0);
    return;
  }
  // Tokens of weight >= 2t hold less than `needed` (t is the largest such power of two): all of them are in the
  // nucleus, and only the tokens in [t, 2t) need ordering.
  const auto boundary = std::partition(candidates_.begin(), candidates_.end(),
                                       [&](const Candidate& c) { return weights_[c.second] >= 2 * threshold; });
  double sure_mass = 0;
  for (auto c = candidates_.begin(); c != boundary; ++c) sure_mass += weights_[c->second];
  if (sure_mass >= needed) {  // likewise misled: order them all
    keep_nucleus(needed, 0);
  } else {
    keep_nucleus(needed - sure_mass, static_cast<size_t>(boundary - candidates_.begin()));
  }
}

void Sampler::keep_nucleus(double needed, size_t sure) {
  auto weight = [this](const Candidate& candidate) { return static_cast<double>(weights_[candidate.second]); };

  // Quickselect by mass: candidates_[0, low) are the most likely and hold less than top_p of the mass;
  // the boundary token lies in [low, high). Expected O(n), against O(n log n) for sorting.
  size_t low = sure;
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

int32_t Sampler::draw_from_all(double total, double uniform) {
  // In token id order: whole blocks are passed while the running sum stays at or below the target, then tokens
  // one by one from the block that holds it (on past its end, should the block's vector sum have rounded above
  // its tokens' running sum).
  const double target = uniform * total;
  double cumulative = 0;
  size_t block = 0;
  while (block + 1 < block_weights_.size() && cumulative + block_weights_[block] <= target) {
    cumulative += block_weights_[block++];
  }
  for (size_t i = block * kBlock; i < weights_.size(); ++i) {
    cumulative += weights_[i];
    if (weights_[i] > 0 && cumulative > target) return static_cast<int32_t>(i);
  }
  // Rounding left the target past every weight: the last token that has one.
  for (size_t i = weights_.size(); i-- > 0;) {
    if (weights_[i] > 0) return static_cast<int32_t>(i);
  }
  return 0;  // unreachable: the most likely token weighs 1
}

int32_t Sampler::draw_from_candidates(std::span<const float> logits, double uniform) {
  // In token id order, so the result does not depend on how selection arranged the candidates: a few are sorted
  // by id; many (a flat distribution's nucleus) are walked in the row as every token at least as likely as the
  // least likely of them, which costs less than sorting them.
  if (candidates_.size() > kMostSortedCandidates) {
    const Candidate least_likely = *std::max_element(candidates_.begin(), candidates_.end(), more_likely);
    candidates_.clear();
    for (size_t i = 0; i < logits.size(); ++i) {
      const Candidate token = {logits[i], static_cast<int32_t>(i)};
      if (!more_likely(least_likely, token)) candidates_.push_back(token);
    }
  } else {
    std::sort(candidates_.begin(), candidates_.end(),
              [](const Candidate& a, const Candidate& b) { return a.second < b.second; });
  }
  double total = 0;
  for (const Candidate& candidate : candidates_) total += weights_[candidate.second];
  const double target = uniform * total;
  double cumulative = 0;
  int32_t last_possible = candidates_.front().second;  // replaced below: the most likely candidate weighs 1
  for (const Candidate& candidate : candidates_) {
    if (weights_[candidate.second] <= 0) continue;
    cumulative += weights_[candidate.second];
    last_possible = candidate.second;
    if (cumulative > target) return last_possible;
  }
  return last_possible;
}

double Sampler::next_uniform() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

}  // namespace recgpt
