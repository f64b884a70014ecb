#include "router/logprob_entries.h"

#include "common/status.h"
#include "engine/utf8.h"

namespace recgpt::router {

TokenChoice LogprobEntries::choice(int32_t token, float logprob) const {
  return {std::string(tokenizer_.token_bytes(token)), logprob, token};
}

std::vector<LogprobEntry> LogprobEntries::add(std::span<const int32_t> tokens,
                                              std::span<const TokenLogprobs> logprobs) {
  RECGPT_CHECK(tokens.size() == logprobs.size());
  std::vector<LogprobEntry> entries;
  entries.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    LogprobEntry entry{choice(tokens[i], logprobs[i].logprob), {}, characters_};
    for (const TokenLogprob& top : logprobs[i].top) entry.top.push_back(choice(top.token, top.logprob));
    if (!tokenizer_.is_special(tokens[i])) {
      pending_ += entry.token.bytes;
      std::string text;
      pending_.erase(0, append_utf8_lossy(pending_, /*end_of_input=*/false, text));
      for (unsigned char byte : text) characters_ += (byte & 0xC0) != 0x80 ? 1 : 0;  // lead bytes: characters
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

}  // namespace recgpt::router
