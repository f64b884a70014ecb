// Decoding constrained to a fixed line shape: up to `max_lines` lines, each `prefix` (forced, token by token)
// then free text of 1 to `max_line_tokens` tokens without a line break or special token, each ended by the line
// break token; then `end`. The workflows' planner writes its personas under it ("Persona: ...\n" lines), so
// they always parse, whatever the model.
//
// Like ChoiceListProcessor, it reads the generated tokens past the prompt from `tokens`, so a decode node picks
// up the state from a prefill node's first token.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/logits_processor.h"
#include "engine/tokenizer.h"

namespace recgpt {

// Which tokens may appear inside a line: not special, no line break among their bytes. Built once per tokenizer.
class LineTokens {
 public:
  explicit LineTokens(const Tokenizer& tokenizer);
  bool inline_token(int32_t token) const {
    return token >= 0 && static_cast<size_t>(token) < inline_.size() && inline_[static_cast<size_t>(token)];
  }

 private:
  std::vector<bool> inline_;
};

struct LinesShape {
  std::vector<int32_t> prefix;  // tokens every line starts with (may be empty)
  int32_t max_lines = 1;
  int32_t max_line_tokens = 32;  // free tokens per line, after the prefix
  int32_t separator = -1;        // the line break token
  int32_t end = -1;
};

class LinesProcessor final : public LogitsProcessor {
 public:
  LinesProcessor(std::shared_ptr<const LineTokens> line_tokens, LinesShape shape, size_t prompt_tokens);
  void process(std::span<float> logits, std::span<const int32_t> tokens) override;
  // False (and nothing allowed from then on) for a token the shape does not allow here.
  bool advance(int32_t token);
  // Whether `token` is allowed next.
  bool allows(int32_t token) const;
  int32_t lines() const { return lines_; }

 private:
  std::shared_ptr<const LineTokens> line_tokens_;
  LinesShape shape_;
  size_t consumed_;
  int32_t lines_ = 0;        // complete lines
  size_t prefix_done_ = 0;   // prefix tokens written on the current line
  int32_t free_tokens_ = 0;  // free tokens written on the current line
  bool in_line_ = false;
  bool ended_ = false;
  bool broken_ = false;
};

}  // namespace recgpt
