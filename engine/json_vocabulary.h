// A vocabulary prepared for JSON token masks (engine/json_processor.h), built once per tokenizer and shared by
// every schema: its tokens' bytes, their byte trie, and, per string state, which tokens stay inside a string.
//
// Inside a string most of the vocabulary is allowed, and a trie walk would visit nearly all of it (6 ms on a
// Qwen-sized vocabulary). But a string's bytes up to its closing quote depend on the string's own state alone
// (JsonMatcher::string_step), so per string state the vocabulary splits once into tokens that stay inside
// (allowed whatever holds the string), tokens that close it (a trie of their bytes from the quote on, walked
// from the matcher), and the rest (refused).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/json_matcher.h"
#include "engine/token_byte_trie.h"

namespace recgpt {

class Tokenizer;

// A set of token ids, a bit each.
struct TokenMask {
  std::vector<uint64_t> words;

  static TokenMask empty(int32_t vocab_size) {
    return TokenMask{std::vector<uint64_t>((static_cast<size_t>(vocab_size) + 63) / 64, 0)};
  }
  bool contains(int32_t token) const {
    const auto index = static_cast<size_t>(token);
    return token >= 0 && index / 64 < words.size() && ((words[index / 64] >> (index % 64)) & 1) != 0;
  }
  void insert(int32_t token) { words[static_cast<size_t>(token) / 64] |= uint64_t{1} << (token % 64); }
};

class JsonVocabulary {
 public:
  // tokens[id] are token id's bytes; empty for tokens never allowed in JSON (special tokens, unused ids).
  explicit JsonVocabulary(std::vector<std::string> tokens);
  // The tokenizer's non-special tokens.
  static std::shared_ptr<const JsonVocabulary> from_tokenizer(const Tokenizer& tokenizer);

  int32_t vocab_size() const { return trie_.vocab_size(); }
  std::string_view token(int32_t id) const { return tokens_[static_cast<size_t>(id)]; }
  const TokenByteTrie& trie() const { return trie_; }

  struct StringSplit {
    TokenMask inside;       // all bytes inside the string
    TokenByteTrie closing;  // tokens that close it, by their bytes from the closing quote on
  };
  // Computed on first use for each state, then kept (a string has a few dozen states). Thread-safe.
  const StringSplit& string_split(JsonMatcher::StringState state) const;

 private:
  std::vector<std::string> tokens_;
  TokenByteTrie trie_;
  mutable std::mutex mutex_;
  mutable std::map<std::pair<uint8_t, uint32_t>, std::unique_ptr<const StringSplit>> splits_;
};

}  // namespace recgpt
