// Structured output: decoding constrained to JSON under a schema (OpenAI's response_format json_object and
// json_schema). Each step allows exactly the tokens whose bytes the sequence's JsonMatcher accepts next, found
// by walking the vocabulary's byte trie (inside a string: its precomputed split, engine/json_vocabulary.h);
// masks are cached by matcher state (JsonMatcher::state_key), so the same place in a repeated shape costs one
// lookup. The end token is allowed once the value is whole, and is all that is allowed once it is closed.
//
// Like the other processors, it reads the generated tokens past the prompt from `tokens`, so a decode node picks
// up the state from a prefill node's first token.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/json_matcher.h"
#include "engine/json_vocabulary.h"
#include "engine/logits_processor.h"

namespace recgpt {

// A schema with its vocabulary and mask cache, shared by every sequence decoding under it. Thread-safe.
class JsonGrammar {
 public:
  static constexpr size_t kDefaultCachedMasks = 256;

  JsonGrammar(std::shared_ptr<const JsonSchema> schema, std::shared_ptr<const JsonVocabulary> vocabulary,
              size_t cached_masks = kDefaultCachedMasks);

  const std::shared_ptr<const JsonSchema>& schema() const { return schema_; }
  const JsonVocabulary& vocabulary() const { return *vocabulary_; }

  // The tokens `matcher` accepts whole as its next bytes (not the end token).
  std::shared_ptr<const TokenMask> next_tokens(const JsonMatcher& matcher) const;
  // The same, computed without the cache (for tests and the benchmark).
  TokenMask compute_next_tokens(const JsonMatcher& matcher) const;

  struct CacheStats {
    uint64_t hits = 0;
    uint64_t misses = 0;
  };
  CacheStats cache_stats() const;

 private:
  std::shared_ptr<const JsonSchema> schema_;
  std::shared_ptr<const JsonVocabulary> vocabulary_;
  size_t capacity_;

  using Entry = std::pair<std::string, std::shared_ptr<const TokenMask>>;
  mutable std::mutex mutex_;
  mutable std::list<Entry> recent_;  // most recently used first
  mutable std::unordered_map<std::string, std::list<Entry>::iterator> cache_;
  mutable CacheStats stats_;
};

class JsonProcessor final : public LogitsProcessor {
 public:
  JsonProcessor(std::shared_ptr<const JsonGrammar> grammar, int32_t end, size_t prompt_tokens);
  void process(std::span<float> logits, std::span<const int32_t> tokens) override;
  // False (and nothing allowed from then on) for a token the schema does not allow here.
  bool advance(int32_t token);
  bool allows(int32_t token) const;
  const JsonMatcher& matcher() const { return matcher_; }
  const std::shared_ptr<const JsonGrammar>& grammar() const { return grammar_; }

 private:
  std::shared_ptr<const JsonGrammar> grammar_;
  JsonMatcher matcher_;
  int32_t end_;
  size_t consumed_;
  bool ended_ = false;
  bool broken_ = false;
};

}  // namespace recgpt
