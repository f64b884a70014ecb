// Generated tokens to the text a client sees: detokenized incrementally (special tokens skipped), cut at the
// first stop string, and held back while its tail could still become a stop string, so no part of a stop
// string is ever sent. Text is released on whole UTF-8 characters. With `min_tokens` (vLLM's), a stop string
// counts only when it ends in the text of the min_tokens-th token or a later one.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/tokenizer.h"

namespace recgpt::router {

class StopMatcher {
 public:
  StopMatcher(const Tokenizer& tokenizer, std::vector<std::string> stops, int32_t min_tokens = 0);

  // Adds tokens; false once a stop string matched (later tokens are ignored).
  bool push(std::span<const int32_t> tokens);
  // The generation ended: what was held back may go (the detokenizer's tail too).
  void finish();
  // The text released since the last take().
  std::string take();
  bool matched() const { return matched_; }

 private:
  void release();

  StreamingDetokenizer detokenizer_;
  std::vector<std::string> stops_;
  int32_t min_tokens_;
  int64_t tokens_ = 0;   // pushed so far
  size_t hold_ = 0;      // bytes of the longest stop string minus one
  std::string pending_;  // not released yet
  size_t early_ = 0;     // bytes at the start of pending_ from tokens before the min_tokens-th: no stop ends there
  std::string ready_;    // released, not taken yet
  bool matched_ = false;
};

}  // namespace recgpt::router
