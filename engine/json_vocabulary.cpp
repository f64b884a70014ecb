#include "engine/json_vocabulary.h"

#include "engine/tokenizer.h"

namespace recgpt {

JsonVocabulary::JsonVocabulary(std::vector<std::string> tokens) : tokens_(std::move(tokens)), trie_(tokens_) {}

std::shared_ptr<const JsonVocabulary> JsonVocabulary::from_tokenizer(const Tokenizer& tokenizer) {
  std::vector<std::string> tokens(static_cast<size_t>(tokenizer.vocab_size()));
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (!tokenizer.is_special(id)) tokens[static_cast<size_t>(id)] = std::string(tokenizer.token_bytes(id));
  }
  return std::make_shared<const JsonVocabulary>(std::move(tokens));
}

const JsonVocabulary::StringSplit& JsonVocabulary::string_split(JsonMatcher::StringState state) const {
  std::lock_guard lock(mutex_);
  auto& split = splits_[{state.phase, state.count}];
  if (split != nullptr) return *split;
  TokenMask inside = TokenMask::empty(vocab_size());
  std::vector<std::string> closing(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    const std::string& bytes = tokens_[id];
    JsonMatcher::StringState walk = state;
    auto step = JsonMatcher::StringStep::kInside;
    size_t at = 0;
    for (; at < bytes.size() && step == JsonMatcher::StringStep::kInside; ++at) {
      step = JsonMatcher::string_step(walk, static_cast<uint8_t>(bytes[at]));
    }
    if (bytes.empty() || step == JsonMatcher::StringStep::kRefused) continue;
    if (step == JsonMatcher::StringStep::kInside) {
      inside.insert(static_cast<int32_t>(id));
    } else {
      closing[id] = bytes.substr(at - 1);  // from the quote
    }
  }
  split = std::make_unique<const StringSplit>(StringSplit{std::move(inside), TokenByteTrie(closing)});
  return *split;
}

}  // namespace recgpt
