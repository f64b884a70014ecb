// vLLM's POST /tokenize and /detokenize: the served model's tokenizer, for clients that count a prompt's tokens
// or name tokens (logit_bias, stop_token_ids). Bodies as the completion endpoints take them and answers in
// vLLM's shapes; pure functions over text, as router/openai_api.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "router/openai_api.h"

namespace recgpt {
class Tokenizer;
}

namespace recgpt::router {

struct TokenizeSettings {
  std::string model_name;       // the one model served: another is 404 model_not_found
  int64_t max_model_len = 0;    // the model's context
  size_t max_tokens = 1 << 20;  // ids in a /detokenize body
};

// /tokenize: {"model", "prompt"} (a string or token ids, as /v1/completions) or {"model", "messages"} (ChatML with
// the assistant's header, as /v1/chat/completions writes it) -> {"count", "max_model_len", "tokens"}.
std::variant<std::string, ApiError> tokenize_answer(std::string_view body, const Tokenizer& tokenizer,
                                                    const ApiLimits& limits, const TokenizeSettings& settings);
// /detokenize: {"model", "tokens": [ids]} -> {"prompt": text}; ids outside the vocabulary are refused by name.
std::variant<std::string, ApiError> detokenize_answer(std::string_view body, const Tokenizer& tokenizer,
                                                      const ApiLimits& limits, const TokenizeSettings& settings);

}  // namespace recgpt::router
