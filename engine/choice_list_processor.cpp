#include "engine/choice_list_processor.h"

#include <algorithm>
#include <limits>

namespace recgpt {

ChoiceListProcessor::ChoiceListProcessor(std::shared_ptr<const ChoiceTrie> trie, ChoiceListShape shape,
                                         size_t prompt_tokens)
    : trie_(std::move(trie)), shape_(shape), consumed_(prompt_tokens) {}

bool ChoiceListProcessor::available(int32_t node) const {
  auto it = crossed_.find(node);
  return trie_->choices_below(node) - (it == crossed_.end() ? 0 : it->second) > 0;
}

bool ChoiceListProcessor::at_unlisted_choice() const {
  const int32_t here = trie_->choice_at(node_);
  return node_ != ChoiceTrie::kRoot && here >= 0 && std::find(items_.begin(), items_.end(), here) == items_.end();
}

bool ChoiceListProcessor::allows(int32_t token) const {
  if (ended_ || broken_) return false;
  const auto count = static_cast<int32_t>(items_.size());
  if (count >= shape_.max_items) return token == shape_.end;
  if (token == shape_.end) return node_ == ChoiceTrie::kRoot ? count > 0 : at_unlisted_choice();
  if (token == shape_.separator) return at_unlisted_choice() && count + 1 < shape_.max_items;
  const int32_t child = trie_->child(node_, token);
  return child >= 0 && available(child);
}

std::vector<int32_t> ChoiceListProcessor::allowed() const {
  std::vector<int32_t> tokens;
  for (int32_t token : {shape_.end, shape_.separator}) {
    if (allows(token)) tokens.push_back(token);
  }
  if (!ended_ && !broken_ && static_cast<int32_t>(items_.size()) < shape_.max_items) {
    for (const ChoiceTrie::Edge& edge : trie_->edges(node_)) {
      if (available(edge.child)) tokens.push_back(edge.token);
    }
  }
  std::sort(tokens.begin(), tokens.end());
  tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
  return tokens;
}

void ChoiceListProcessor::complete_item() {
  items_.push_back(trie_->choice_at(node_));
  ++crossed_[ChoiceTrie::kRoot];
  for (int32_t node : path_) ++crossed_[node];
  node_ = ChoiceTrie::kRoot;
  path_.clear();
}

bool ChoiceListProcessor::advance(int32_t token) {
  if (!allows(token)) {
    broken_ = true;
    return false;
  }
  if (token == shape_.end || token == shape_.separator) {
    if (node_ != ChoiceTrie::kRoot) complete_item();
    ended_ = token == shape_.end;
    return true;
  }
  node_ = trie_->child(node_, token);
  path_.push_back(node_);
  return true;
}

void ChoiceListProcessor::process(std::span<float> logits, std::span<const int32_t> tokens) {
  for (; consumed_ < tokens.size(); ++consumed_) {
    if (!broken_) (void)advance(tokens[consumed_]);
  }
  // Keep the allowed logits, forbid everything, put them back.
  const std::vector<int32_t> ok = allowed();
  std::vector<float> kept;
  kept.reserve(ok.size());
  for (int32_t token : ok) {
    kept.push_back(token >= 0 && static_cast<size_t>(token) < logits.size() ? logits[static_cast<size_t>(token)]
                                                                            : -std::numeric_limits<float>::infinity());
  }
  std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < ok.size(); ++i) {
    if (ok[i] >= 0 && static_cast<size_t>(ok[i]) < logits.size()) logits[static_cast<size_t>(ok[i])] = kept[i];
  }
}

ParsedChoiceList parse_choice_list(const ChoiceTrie& trie, std::string_view text) {
  ParsedChoiceList parsed;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view item = text.substr(begin, end - begin);
    if (!item.empty()) {
      (trie.find(item) >= 0 ? parsed.items : parsed.unknown).emplace_back(item);
    }
    begin = end + 1;
  }
  return parsed;
}

}  // namespace recgpt
