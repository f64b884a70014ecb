#include "engine/tokenizer_added_tokens.h"

#include "engine/tokenizer_unicode.h"
#include "engine/utf8.h"

namespace recgpt {
namespace {

char32_t code_point_ending_at(std::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  return next_utf8_sequence(text.substr(begin, end - begin)).code_point;
}

char32_t code_point_starting_at(std::string_view text, size_t begin) {
  return next_utf8_sequence(text.substr(begin)).code_point;
}

size_t start_of_trailing_white_space(std::string_view text, size_t floor, size_t end) {
  while (end > floor) {
    size_t begin = end - 1;
    while (begin > floor && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
    if (!is_unicode_white_space(code_point_starting_at(text, begin))) break;
    end = begin;
  }
  return end;
}

size_t end_of_leading_white_space(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    Utf8Sequence sequence = next_utf8_sequence(text.substr(begin));
    if (!is_unicode_white_space(sequence.code_point)) break;
    begin += sequence.length_bytes;
  }
  return begin;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedTokenPattern> tokens) : tokens_(std::move(tokens)) {
  for (size_t index = 0; index < tokens_.size(); ++index) {
    const std::string& content = tokens_[index].content;
    if (content.empty()) continue;
    starts_token_[static_cast<uint8_t>(content[0])] = true;
    int32_t node = 0;
    for (char byte : content) {
      uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(byte);
      auto [child, inserted] = children_.try_emplace(key, static_cast<int32_t>(terminal_token_.size()));
      if (inserted) terminal_token_.push_back(-1);
      node = child->second;
    }
    // The first of several tokens with the same content wins, as in HF's map from content to token.
    if (terminal_token_[node] < 0) terminal_token_[node] = static_cast<int32_t>(index);
  }
}

int32_t AddedTokenMatcher::longest_match_at(std::string_view text, size_t begin) const {
  int32_t node = 0;
  int32_t longest = -1;
  for (size_t position = begin; position < text.size(); ++position) {
    uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[position]);
    auto child = children_.find(key);
    if (child == children_.end()) break;
    node = child->second;
    if (terminal_token_[node] >= 0) longest = terminal_token_[node];
  }
  return longest;
}

std::vector<AddedTokenMatcher::Segment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Segment> segments;
  size_t plain_begin = 0;
  size_t position = 0;
  while (position < text.size()) {
    if (!starts_token_[static_cast<uint8_t>(text[position])]) {
      ++position;
      continue;
    }
    int32_t index = longest_match_at(text, position);
    if (index < 0) {
      ++position;
      continue;
    }
    const AddedTokenPattern& token = tokens_[index];
    size_t begin = position;
    size_t end = position + token.content.size();
    position = end;
    if (token.single_word) {
      bool word_before = begin > 0 && is_unicode_word_character(code_point_ending_at(text, begin));
      bool word_after = end < text.size() && is_unicode_word_character(code_point_starting_at(text, end));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) begin = start_of_trailing_white_space(text, plain_begin, begin);
    if (token.rstrip) end = end_of_leading_white_space(text, end);
    if (begin > plain_begin) segments.push_back({text.substr(plain_begin, begin - plain_begin), -1});
    segments.push_back({text.substr(begin, end - begin), token.id});
    plain_begin = end;
    position = end;
  }
  if (plain_begin < text.size()) segments.push_back({text.substr(plain_begin), -1});
  return segments;
}

}  // namespace recgpt
