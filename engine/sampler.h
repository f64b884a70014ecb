// Per-sequence token sampling: logit bias, repetition, frequency and presence penalties, temperature, top-k,
// top-p, then a draw.
//
// The order and rules follow Hugging Face's logits processors, OpenAI's penalties and vLLM:
//   0. logit_bias: each listed token's bias added to its logit (OpenAI's; -100 bans a token in practice);
//   1. repetition penalty over the SET of previous tokens (prompt and generated): a positive logit is divided by
//      the penalty, a negative one multiplied (each distinct token once);
//      frequency and presence penalties over the GENERATED tokens only (the last first_draw + calls-so-far of
//      previous_tokens): logit -= frequency_penalty * count + presence_penalty for each token generated count > 0
//      times (OpenAI's definition);
//   2. greedy when temperature == 0 or top_k == 1: the argmax, lowest id on ties;
//   3. otherwise logits / temperature;
//   4. top-k: keep the k largest (ties broken by lower id);
//   5. top-p: keep the smallest set of most likely tokens whose softmax probability (over what top-k kept)
//      sums to >= top_p, at least one token;
//   6. draw from the softmax of what is left with the sampler's own random generator.
// Every sample() takes the generator's next output, whether it draws or not (greedy), so the i-th token of a
// sequence always uses output first_draw + i: a sequence whose first token was sampled on another node (the
// prefill node), or continued on other nodes after its own died, draws as if it had never moved.
// Logits of -inf (masked by a constraint) are never drawn unless nothing else is left.
//
// Cost for a vocabulary of V: O(V) per token in every mode, in vector passes over the row (engine/cpu/ops.h:
// its maximum, and exp(logit - maximum) with sums by block) and one scalar pass when top-k or top-p truncate.
// Top-k keeps a heap of k; top-p takes only tokens heavy enough to matter and selects by mass; neither sorts the
// vocabulary. The weights come from the vector exp (~2 ulp): the same seed and logits give the same tokens on
// CPUs of the same vector width (AVX-512 or AVX2).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"

namespace recgpt {

struct SamplingParams {
  float temperature = 0;         // 0 = greedy
  int top_k = 0;                 // 0 = off
  float top_p = 1;               // 1 = off
  float repetition_penalty = 1;  // 1 = off
  float frequency_penalty = 0;   // 0 = off; in [-2, 2]
  float presence_penalty = 0;    // 0 = off; in [-2, 2]
  uint64_t seed = 0;
  uint64_t first_draw = 0;  // the generator's outputs already used by this sequence's earlier tokens (elsewhere)
  std::vector<std::pair<int32_t, float>> logit_bias = {};  // (token, bias in [-100, 100]), each token once
  // Not sampling but reported with each token (engine/token_logprobs.h): its log-probability, and that of the
  // top_logprobs most likely tokens.
  bool logprobs = false;
  int top_logprobs = 0;  // 0..kMaxTopLogprobs; needs logprobs
  // Not sampling either: vLLM's min_tokens, which the generator applies (engine/generator.h): the sequence's
  // stop tokens are masked until it generated this many tokens (first_draw counted).
  int min_tokens = 0;

  static constexpr uint64_t kMaxFirstDraw = uint64_t{1} << 24;  // skipping is O(first_draw)
  static constexpr float kMaxPenalty = 2;                       // OpenAI's bound on frequency/presence penalties
  static constexpr int kMaxTopLogprobs = 20;
  static constexpr float kMaxLogitBias = 100;
  static constexpr size_t kMaxLogitBiasTokens = 1024;
  static constexpr int kMaxMinTokens = 1 << 20;

  // kInvalidArgument naming the field: temperature negative or not finite, top_k negative, top_p outside
  // (0, 1], repetition_penalty <= 0 or not finite, frequency or presence penalty outside [-2, 2], first_draw
  // above kMaxFirstDraw, top_logprobs outside [0, kMaxTopLogprobs] or set without logprobs, logit_bias with more
  // than kMaxLogitBiasTokens tokens, a negative or repeated token, or a bias outside [-100, 100], min_tokens
  // outside [0, kMaxMinTokens].
  Status validate() const;
  // validate(), and every logit_bias token below `vocab_size` (the sampler's rows are that long).
  Status validate(int64_t vocab_size) const;
};

// Where generation began in a prompt of `prompt_tokens`: a call continued on other nodes after its own died
// carries the tokens it generated there (as many as first_draw) at the end of its prompt; a decoding constraint
// replays them from here.
inline size_t generation_start(size_t prompt_tokens, const SamplingParams& sampling) {
  return prompt_tokens - static_cast<size_t>(std::min<uint64_t>(sampling.first_draw, prompt_tokens));
}

// vLLM's min_tokens: sets `stop_tokens` (those inside `logits`) to -inf while the sequence has generated fewer
// than `min_tokens` tokens (`next_index`, the index of its next one, first_draw counted).
void mask_early_stop_tokens(std::span<float> logits, std::span<const int32_t> stop_tokens, uint64_t next_index,
                            int min_tokens);

// One sequence's sampler. Deterministic: the same params (seed included) and the same logits give the same
// tokens, whatever other sequences in the batch do. Not thread-safe; one sequence, one thread at a time.
class Sampler {
 public:
  // `params` must be valid (validate(); RECGPT_CHECK).
  explicit Sampler(const SamplingParams& params);

  // Picks the next token from `logits` [vocab] (modified in place: bias, penalties and temperature are applied).
  // `previous_tokens` are the prompt and generated tokens so far; ids outside [0, vocab) abort
  // (RECGPT_CHECK), as do an empty `logits` and a logit_bias token outside it (validate(vocab_size)).
  int32_t sample(std::span<float> logits, std::span<const int32_t> previous_tokens);

  const SamplingParams& params() const { return params_; }
  // The index of the sequence's next token among its generated ones: first_draw plus the calls so far.
  uint64_t next_index() const { return params_.first_draw + draws_; }

 private:
  using Candidate = std::pair<float, int32_t>;  // (logit, token)

  void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> previous_tokens);
  // Frequency and presence penalties over the generated tokens at the end of previous_tokens.
  void apply_output_penalties(std::span<float> logits, std::span<const int32_t> previous_tokens);
  // candidates_ = what top-k, then top-p if set, keep of the row (any order).
  void select_top_k(std::span<const float> logits);
  // Below this weight a token cannot be in the top-p nucleus of `tokens` tokens weighing `total`.
  double nucleus_floor(double total, size_t tokens) const;
  // candidates_ = the top-p nucleus of the whole row (any order), whose weights sum to `total`.
  void select_nucleus(std::span<const float> logits, double total);
  // Keeps candidates_[0, sure) and, of the rest, the fewest most likely that add `needed` weight (any order).
  void keep_nucleus(double needed, size_t sure);
  // Draw from the softmax over the whole row, or over candidates_.
  // `uniform`: this call's draw in [0, 1).
  int32_t draw_from_all(double total, double uniform);  // `total`: the row's weight
  int32_t draw_from_candidates(std::span<const float> logits, double uniform);
  double next_uniform();  // [0, 1), 53 random bits; portable, unlike std::uniform_real_distribution

  SamplingParams params_;
  std::mt19937_64 random_;
  std::vector<Candidate> candidates_;  // scratch, reused across calls
  std::vector<int32_t> indices_;       // scratch: tokens heavy enough for the nucleus
  std::vector<float> penalized_;       // scratch for the repetition penalty
  std::vector<float> weights_;         // [vocab] exp(logit - max logit) of the current call
  std::vector<double> block_weights_;  // sums of weights_ by blocks of the row (sampler.cpp)
  uint64_t draws_ = 0;                 // sample() calls so far
  // Generated tokens by id, counted from previous_tokens[counted_from_] up to counted_until_ (the calls'
  // tokens only grow, so each call counts only the new ones).
  std::unordered_map<int32_t, int32_t> output_counts_;
  size_t counted_from_ = 0;
  size_t counted_until_ = 0;
};

}  // namespace recgpt
