#include "engine/tokenizer_pre_tokenizer.h"

#include <string>

namespace recgpt {

void PreTokenizer::add_split(TokenizerRegex pattern) { steps_.push_back({std::move(pattern), false}); }

void PreTokenizer::add_byte_level(bool add_prefix_space, std::optional<TokenizerRegex> gpt2_pattern) {
  steps_.push_back({std::move(gpt2_pattern), add_prefix_space});
}

void PreTokenizer::split(std::string_view text, const std::function<void(std::string_view)>& on_piece) const {
  if (!text.empty()) run_from(0, text, on_piece);
}

void PreTokenizer::run_from(size_t step_index, std::string_view text,
                            const std::function<void(std::string_view)>& on_piece) const {
  if (step_index == steps_.size()) {
    on_piece(text);
    return;
  }
  const Step& step = steps_[step_index];
  std::string prefixed;
  if (step.add_prefix_space && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  if (!step.regex) {
    run_from(step_index + 1, text, on_piece);
    return;
  }
  step.regex->split_isolated(text, [&](std::string_view piece) { run_from(step_index + 1, piece, on_piece); });
}

}  // namespace recgpt
