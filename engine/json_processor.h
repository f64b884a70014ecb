// Structured output: decoding constrained to JSON under a schema (OpenAI's response_format json_object and
// json_schema). Each step allows exactly the tokens whose bytes the sequence's JsonMatcher accepts next, found
// by walking the vocabulary's byte trie (inside a string: its precomputed split, engine/json_vocabulary.h);
// masks are cached by matcher state (JsonMatcher::state_key), so the same place in a repeated shape costs one
// lookup. The end token is allowed once the value is whole, and is all that is allowed once it is closed.
//
// Like the other processors, it reads the generated tokens past the prompt from `tokens`, so a decode node picks
// up the state from a prefill node's first token.
#pragma once

#include <algorithm>
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

// Token masks by grammar and automaton state, the most recently used kept: one per node, shared by its
// grammars, so their masks (vocabulary / 8 bytes each: 19 KB for Qwen3's) have one bound. Thread-safe.
class JsonMaskCache {
 public:
  static constexpr size_t kDefaultCapacity = 1024;

  explicit JsonMaskCache(size_t capacity = kDefaultCapacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  std::shared_ptr<const TokenMask> find(const std::string& key);
  void insert(std::string key, std::shared_ptr<const TokenMask> mask);

  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    size_t masks = 0;
  };
  Stats stats() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const TokenMask>>;
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::list<Entry> recent_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> entries_;
  Stats stats_;
};

// A schema with its vocabulary, shared by every sequence decoding under it; its masks go to `cache` (its own
// when none is given). Thread-safe.
class JsonGrammar {
 public:
  JsonGrammar(std::shared_ptr<const JsonSchema> schema, std::shared_ptr<const JsonVocabulary> vocabulary,
              std::shared_ptr<JsonMaskCache> cache = nullptr);

  const std::shared_ptr<const JsonSchema>& schema() const { return schema_; }
  const JsonVocabulary& vocabulary() const { return *vocabulary_; }

  // The tokens `matcher` accepts whole as its next bytes (not the end token).
  std::shared_ptr<const TokenMask> next_tokens(const JsonMatcher& matcher) const;
  // The same, computed without the cache (for tests and the benchmark).
  TokenMask compute_next_tokens(const JsonMatcher& matcher) const;

  JsonMaskCache& cache() const { return *cache_; }

 private:
  std::shared_ptr<const JsonSchema> schema_;
  std::shared_ptr<const JsonVocabulary> vocabulary_;
  std::shared_ptr<JsonMaskCache> cache_;
  uint64_t id_;  // names this grammar's keys in a shared cache
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
