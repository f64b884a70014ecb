#include "engine/lines_processor.h"

#include <algorithm>
#include <limits>

namespace recgpt {

LineTokens::LineTokens(const Tokenizer& tokenizer) : inline_(static_cast<size_t>(tokenizer.vocab_size()), false) {
  for (int32_t token = 0; token < tokenizer.vocab_size(); ++token) {
    const std::string_view bytes = tokenizer.token_bytes(token);
    inline_[static_cast<size_t>(token)] = !bytes.empty() && !tokenizer.is_special(token) &&
                                          bytes.find('\n') == std::string_view::npos &&
                                          bytes.find('\r') == std::string_view::npos;
  }
}

LinesProcessor::LinesProcessor(std::shared_ptr<const LineTokens> line_tokens, LinesShape shape, size_t prompt_tokens)
    : line_tokens_(std::move(line_tokens)), shape_(std::move(shape)), consumed_(prompt_tokens) {}

bool LinesProcessor::allows(int32_t token) const {
  if (ended_ || broken_) return false;
  if (!in_line_) {  // at a line's start: a new line, or the end after at least one
    if (lines_ >= shape_.max_lines) return token == shape_.end;
    if (token == shape_.end) return lines_ > 0;
    if (!shape_.prefix.empty()) return token == shape_.prefix[0];
    return line_tokens_->inline_token(token);
  }
  if (prefix_done_ < shape_.prefix.size()) return token == shape_.prefix[prefix_done_];
  if (free_tokens_ >= shape_.max_line_tokens) return token == shape_.separator || token == shape_.end;
  if (token == shape_.separator || token == shape_.end) return free_tokens_ > 0;
  return line_tokens_->inline_token(token);
}

bool LinesProcessor::advance(int32_t token) {
  if (!allows(token)) {
    broken_ = true;
    return false;
  }
  if (token == shape_.end) {
    if (in_line_) ++lines_;
    ended_ = true;
    return true;
  }
  if (token == shape_.separator) {
    ++lines_;
    in_line_ = false;
    prefix_done_ = 0;
    free_tokens_ = 0;
    return true;
  }
  if (!in_line_) in_line_ = true;
  if (prefix_done_ < shape_.prefix.size()) {
    ++prefix_done_;
  } else {
    ++free_tokens_;
  }
  return true;
}

void LinesProcessor::process(std::span<float> logits, std::span<const int32_t> tokens) {
  for (; consumed_ < tokens.size(); ++consumed_) {
    if (!broken_) (void)advance(tokens[consumed_]);
  }
  for (size_t token = 0; token < logits.size(); ++token) {
    if (!allows(static_cast<int32_t>(token))) logits[token] = -std::numeric_limits<float>::infinity();
  }
}

}  // namespace recgpt
