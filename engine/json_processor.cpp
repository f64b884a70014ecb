#include "engine/json_processor.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <limits>

namespace recgpt {
namespace {

// Adds every token below `node` whose bytes `matcher` accepts; the matcher is back where it was on return.
void collect(const TokenByteTrie& trie, uint32_t node, JsonMatcher& matcher, TokenMask& mask) {
  for (const TokenByteTrie::Edge& edge : trie.edges(node)) {
    const JsonMatcher::Snapshot before = matcher.save();
    if (matcher.feed(edge.byte)) {
      for (int32_t token : trie.tokens_at(edge.child)) mask.insert(token);
      collect(trie, edge.child, matcher, mask);
    }
    matcher.restore(before);
  }
}

}  // namespace

std::shared_ptr<const TokenMask> JsonMaskCache::find(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto found = entries_.find(key);
  if (found == entries_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  recent_.splice(recent_.begin(), recent_, found->second);
  ++stats_.hits;
  return found->second->second;
}

void JsonMaskCache::insert(std::string key, std::shared_ptr<const TokenMask> mask) {
  std::lock_guard lock(mutex_);
  if (entries_.count(key) > 0) return;  // another sequence computed it meanwhile
  recent_.emplace_front(key, std::move(mask));
  entries_.emplace(std::move(key), recent_.begin());
  if (recent_.size() > capacity_) {
    entries_.erase(recent_.back().first);
    recent_.pop_back();
  }
}

JsonMaskCache::Stats JsonMaskCache::stats() const {
  std::lock_guard lock(mutex_);
  Stats stats = stats_;
  stats.masks = recent_.size();
  return stats;
}

JsonGrammar::JsonGrammar(std::shared_ptr<const JsonSchema> schema, std::shared_ptr<const JsonVocabulary> vocabulary,
                         std::shared_ptr<JsonMaskCache> cache)
    : schema_(std::move(schema)),
      vocabulary_(std::move(vocabulary)),
      cache_(cache != nullptr ? std::move(cache) : std::make_shared<JsonMaskCache>()) {
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id.fetch_add(1);
}

TokenMask JsonGrammar::compute_next_tokens(const JsonMatcher& matcher) const {
  JsonMatcher walker = matcher;
  if (const auto inside = matcher.string_state()) {
    // Up to its quote a closing token's bytes stay inside the string (the split checked them from this state),
    // which they leave in its plain state.
    const JsonVocabulary::StringSplit& split = vocabulary_->string_split(*inside);
    TokenMask mask = split.inside;
    walker.set_string_state(JsonMatcher::string_start());
    collect(split.closing, TokenByteTrie::kRoot, walker, mask);
    return mask;
  }
  TokenMask mask = TokenMask::empty(vocabulary_->vocab_size());
  collect(vocabulary_->trie(), TokenByteTrie::kRoot, walker, mask);
  return mask;
}

std::shared_ptr<const TokenMask> JsonGrammar::next_tokens(const JsonMatcher& matcher) const {
  std::string key(reinterpret_cast<const char*>(&id_), sizeof(id_));
  matcher.state_key(key);
  if (auto cached = cache_->find(key)) return cached;
  // Computed outside the cache's lock: another sequence may compute the same mask meanwhile, which costs time,
  // not correctness.
  auto mask = std::make_shared<const TokenMask>(compute_next_tokens(matcher));
  cache_->insert(std::move(key), mask);
  return mask;
}

JsonProcessor::JsonProcessor(std::shared_ptr<const JsonGrammar> grammar, int32_t end, size_t prompt_tokens)
    : grammar_(std::move(grammar)), matcher_(grammar_->schema()), end_(end), consumed_(prompt_tokens) {}

bool JsonProcessor::allows(int32_t token) const {
  if (ended_ || broken_) return false;
  if (token == end_) return matcher_.complete();
  if (token < 0 || token >= grammar_->vocabulary().vocab_size()) return false;
  const std::string_view bytes = grammar_->vocabulary().token(token);
  JsonMatcher copy = matcher_;
  return !bytes.empty() && copy.feed(bytes);
}

bool JsonProcessor::advance(int32_t token) {
  if (token == end_ && allows(token)) {
    ended_ = true;
    return true;
  }
  // Fed in place: a token refused part way leaves the matcher unspecified, which broken_ makes moot.
  const bool fed = !ended_ && !broken_ && token != end_ && token >= 0 && token < grammar_->vocabulary().vocab_size() &&
                   !grammar_->vocabulary().token(token).empty() && matcher_.feed(grammar_->vocabulary().token(token));
  broken_ = broken_ || !fed;
  return fed;
}

void JsonProcessor::process(std::span<float> logits, std::span<const int32_t> tokens) {
  for (; consumed_ < tokens.size(); ++consumed_) {
    if (!broken_) (void)advance(tokens[consumed_]);
  }
  constexpr float kForbidden = -std::numeric_limits<float>::infinity();
  const bool end_allowed = allows(end_);
  const bool end_in_row = end_ >= 0 && static_cast<size_t>(end_) < logits.size();
  const float end_logit = end_in_row ? logits[static_cast<size_t>(end_)] : kForbidden;
  if (ended_ || broken_ || matcher_.finished()) {
    std::fill(logits.begin(), logits.end(), kForbidden);
    if (end_in_row && end_allowed) logits[static_cast<size_t>(end_)] = end_logit;
    return;
  }
  const std::shared_ptr<const TokenMask> mask = grammar_->next_tokens(matcher_);
  // A word at a time: most are all allowed (inside strings) or all forbidden (elsewhere).
  for (size_t begin = 0; begin < logits.size(); begin += 64) {
    const size_t word = begin / 64;
    const uint64_t allowed = word < mask->words.size() ? mask->words[word] : 0;
    const size_t end = std::min(begin + 64, logits.size());
    if (allowed == 0) {
      std::fill(logits.begin() + static_cast<std::ptrdiff_t>(begin), logits.begin() + static_cast<std::ptrdiff_t>(end),
                kForbidden);
    } else {
      const uint64_t in_row = end - begin == 64 ? ~uint64_t{0} : (uint64_t{1} << (end - begin)) - 1;
      for (uint64_t forbidden = ~allowed & in_row; forbidden != 0; forbidden &= forbidden - 1) {
        logits[begin + static_cast<size_t>(std::countr_zero(forbidden))] = kForbidden;
      }
    }
  }
  // The end token only ends a whole value, even where its bytes would go on with it.
  if (end_in_row) logits[static_cast<size_t>(end_)] = end_allowed ? end_logit : kForbidden;
}

}  // namespace recgpt
