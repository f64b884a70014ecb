// Per-sequence token sampling: repetition penalty, temperature, top-k, top-p, then a draw.
//
// The order and rules follow Hugging Face's logits processors (and vLLM):
//   1. repetition penalty over the SET of previous tokens: a positive logit is divided by the penalty, a
//      negative one multiplied (each distinct token once);
//   2. greedy when temperature == 0 or top_k == 1: the argmax, lowest id on ties;
//   3. otherwise logits / temperature;
//   4. top-k: keep the k largest (ties broken by lower id);
//   5. top-p: keep the smallest set of most likely tokens whose softmax probability (over what top-k kept)
//      sums to >= top_p, at least one token;
//   6. draw from the softmax of what is left with the sampler's own random generator.
// Logits of -inf (masked by a constraint) are never drawn unless nothing else is left.
//
// Cost for a vocabulary of V: expected O(V) per token in every mode. Top-k and top-p select with
// nth_element (top-p by probability mass), never sorting the vocabulary.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "common/status.h"

namespace recgpt {

struct SamplingParams {
  float temperature = 0;         // 0 = greedy
  int top_k = 0;                 // 0 = off
  float top_p = 1;               // 1 = off
  float repetition_penalty = 1;  // 1 = off
  uint64_t seed = 0;

  // kInvalidArgument naming the field: temperature negative or not finite, top_k negative, top_p outside
  // (0, 1], repetition_penalty <= 0 or not finite.
  Status validate() const;
};

// One sequence's sampler. Deterministic: the same params (seed included) and the same logits give the same
// tokens, whatever other sequences in the batch do. Not thread-safe; one sequence, one thread at a time.
class Sampler {
 public:
  // `params` must be valid (validate(); RECGPT_CHECK).
  explicit Sampler(const SamplingParams& params);

  // Picks the next token from `logits` [vocab] (modified in place: penalty and temperature are applied).
  // `previous_tokens` are the prompt and generated tokens so far; ids outside [0, vocab) abort
  // (RECGPT_CHECK), as does an empty `logits`.
  int32_t sample(std::span<float> logits, std::span<const int32_t> previous_tokens);

  const SamplingParams& params() const { return params_; }

 private:
  using Candidate = std::pair<float, int32_t>;  // (logit, token)

  void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> previous_tokens);
  // The least likely token top-k and top-p keep: every token at least as likely is kept.
  Candidate least_likely_kept(std::span<const float> logits);
  // Shrinks candidates_ (any order) to the top-p nucleus of itself (any order).
  void keep_nucleus();
  // Draws from the softmax over the tokens at least as likely as `least_likely`.
  int32_t draw(std::span<const float> logits, Candidate least_likely);
  double next_uniform();  // [0, 1), 53 random bits; portable, unlike std::uniform_real_distribution

  SamplingParams params_;
  std::mt19937_64 random_;
  std::vector<Candidate> candidates_;  // scratch, reused across calls
  std::vector<float> penalized_;       // scratch for the repetition penalty
  std::vector<float> weights_;         // [vocab] exp(logit - max logit) of the current call
};

}  // namespace recgpt
