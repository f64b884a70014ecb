// Finds added tokens (special tokens and user-added words) in text before pre-tokenization, as HF's
// AddedVocabulary does: leftmost-longest, non-overlapping matches of the tokens' contents; `single_word`
// tokens only count when no word character touches them; `lstrip` / `rstrip` tokens swallow the white space
// on their left / right.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace recgpt {

struct AddedTokenPattern {
  int32_t id = 0;
  std::string content;  // non-empty, valid UTF-8
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
};

class AddedTokenMatcher {
 public:
  // A span of the input: either an added token (token_id >= 0) or plain text (token_id == -1).
  struct Segment {
    std::string_view text;
    int32_t token_id;
  };

  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedTokenPattern> tokens);

  // Cuts `text` (valid UTF-8) into segments that cover it in order; plain segments are never empty.
  std::vector<Segment> split(std::string_view text) const;

 private:
  // Index in tokens_ of the longest token starting at text[begin], or -1.
  int32_t longest_match_at(std::string_view text, size_t begin) const;

  std::vector<AddedTokenPattern> tokens_;
  // Byte trie over the contents: child of (node << 8 | byte); terminal token index per node (-1 if none).
  std::unordered_map<uint64_t, int32_t> children_;
  std::vector<int32_t> terminal_token_ = {-1};
  bool starts_token_[256] = {};
};

}  // namespace recgpt
