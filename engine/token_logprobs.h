// Log-probabilities of generated tokens under the model's own distribution: log_softmax of the raw logit row,
// before the entity-token mask, any constraint, penalty, temperature or truncation (what OpenAI's `logprobs`
// report, and vLLM's default `raw_logprobs`). So they do not depend on how the token was drawn.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace recgpt {

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
};

struct TokenLogprobs {
  float logprob = 0;              // of the generated token
  std::vector<TokenLogprob> top;  // the most likely tokens, most likely first (equal ones by lower id)
};

// One sequence's raw row, recorded before the row is processed for sampling and read once the token is drawn.
// Holds a copy of the row (vocab floats). Not thread-safe; one sequence, one thread at a time.
class LogprobRecorder {
 public:
  // Copies `raw_logits` (non-empty) and its log-sum-exp.
  void record(std::span<const float> raw_logits);
  // The recorded row's log-probability of `token`, and its `top` most likely tokens. Preconditions: record()
  // was called; `token` inside the row; top >= 0.
  TokenLogprobs read(int32_t token, int top) const;

 private:
  std::vector<float> raw_;
  double log_total_ = 0;  // log(sum(exp(raw_)))
};

}  // namespace recgpt
