// Generated tokens' logprobs as the API shows them (openai_api.h's LogprobEntry): each token's bytes from the
// tokenizer, and where its text starts in the completion's text, in characters (special tokens, left out of
// the text, add none). One per call; tokens are added in the order they were generated.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/token_logprobs.h"
#include "engine/tokenizer.h"
#include "router/openai_api.h"

namespace recgpt::router {

class LogprobEntries {
 public:
  explicit LogprobEntries(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // One entry per token. Precondition: one TokenLogprobs per token (call_runner checks what nodes send).
  std::vector<LogprobEntry> add(std::span<const int32_t> tokens, std::span<const TokenLogprobs> logprobs);

 private:
  TokenChoice choice(int32_t token, float logprob) const;

  const Tokenizer& tokenizer_;
  int64_t characters_ = 0;  // in the text of the tokens added so far
  std::string pending_;     // their trailing bytes that do not form a whole character yet
};

}  // namespace recgpt::router
