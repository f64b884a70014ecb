#include "router/stop_matcher.h"

#include <algorithm>

namespace recgpt::router {

StopMatcher::StopMatcher(const Tokenizer& tokenizer, std::vector<std::string> stops, int32_t min_tokens)
    : detokenizer_(tokenizer, /*skip_special_tokens=*/true), stops_(std::move(stops)), min_tokens_(min_tokens) {
  for (const std::string& stop : stops_) hold_ = std::max(hold_, stop.size() - 1);
}

bool StopMatcher::push(std::span<const int32_t> tokens) {
  for (int32_t token : tokens) {
    if (matched_) return false;
    pending_ += detokenizer_.push(token);
    if (++tokens_ < min_tokens_) early_ = pending_.size();
    release();
  }
  return !matched_;
}

void StopMatcher::finish() {
  if (!matched_) {
    pending_ += detokenizer_.finish();
    hold_ = 0;
    release();
  }
  ready_ += pending_;
  pending_.clear();
}

std::string StopMatcher::take() { return std::exchange(ready_, {}); }

void StopMatcher::release() {
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    // Only a stop that ends past the early bytes: one starting at or after early_ - (size - 1).
    const size_t from = early_ >= stop.size() ? early_ - (stop.size() - 1) : 0;
    first = std::min(first, pending_.find(stop, from));
  }
  if (first != std::string::npos) {
    ready_ += pending_.substr(0, first);
    pending_.clear();
    matched_ = true;
    return;
  }
  if (pending_.size() <= hold_) return;
  size_t cut = pending_.size() - hold_;
  // Not inside a UTF-8 character: back up over continuation bytes (10xxxxxx).
  while (cut > 0 && cut < pending_.size() && (static_cast<unsigned char>(pending_[cut]) & 0xC0) == 0x80) --cut;
  ready_ += pending_.substr(0, cut);
  pending_.erase(0, cut);
  early_ -= std::min(early_, cut);
}

}  // namespace recgpt::router
