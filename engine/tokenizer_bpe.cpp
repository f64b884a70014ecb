#include "engine/tokenizer_bpe.h"

#include <mutex>
#include <queue>

#include "engine/tokenizer_byte_level.h"

namespace recgpt {

// Words seen before and their ids. Bounded: cleared when full, which keeps it simple and is rare in practice.
struct BpeModel::Cache {
  static constexpr size_t kMaxEntries = 1 << 16;
  static constexpr size_t kMaxWordBytes = 256;
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> ids_of_word;
};

Result<BpeModel> BpeModel::create(const BpeModelSpec& spec) {
  BpeModel model;
  std::unordered_map<std::string_view, int32_t> id_of_token;
  id_of_token.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) {
    id_of_token[token] = id;
    std::optional<std::string> bytes = byte_level_to_bytes(token);
    if (!bytes) continue;
    if (bytes->size() == 1) model.byte_ids_[static_cast<uint8_t>((*bytes)[0])] = id;
    if (spec.ignore_merges) model.whole_word_ids_[*bytes] = id;
  }
  model.merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    auto left_id = id_of_token.find(left);
    auto right_id = id_of_token.find(right);
    auto merged_id = id_of_token.find(left + right);
    if (left_id == id_of_token.end() || right_id == id_of_token.end() || merged_id == id_of_token.end()) {
      return data_loss("merge " + std::to_string(rank) + " ('" + left + "' '" + right +
                       "') uses or makes a token missing from the vocab");
    }
    model.merges_[pair_key(left_id->second, right_id->second)] = {static_cast<int32_t>(rank), merged_id->second};
  }
  if (spec.unk_token) {
    auto unk = id_of_token.find(*spec.unk_token);
    if (unk == id_of_token.end()) return data_loss("unk_token '" + *spec.unk_token + "' is not in the vocab");
    model.unk_id_ = unk->second;
  }
  model.fuse_unk_ = spec.fuse_unk;
  model.ignore_merges_ = spec.ignore_merges;
  model.cache_ = std::make_shared<Cache>();
  return model;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    auto whole = whole_word_ids_.find(std::string(word));
    if (whole != whole_word_ids_.end()) {
      ids.push_back(whole->second);
      return;
    }
  }
  if (word.size() > Cache::kMaxWordBytes) {
    merge_word(word, ids);
    return;
  }
  std::string key(word);
  {
    std::lock_guard lock(cache_->mutex);
    auto cached = cache_->ids_of_word.find(key);
    if (cached != cache_->ids_of_word.end()) {
      ids.insert(ids.end(), cached->second.begin(), cached->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  merge_word(word, word_ids);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  std::lock_guard lock(cache_->mutex);
  if (cache_->ids_of_word.size() >= Cache::kMaxEntries) cache_->ids_of_word.clear();
  cache_->ids_of_word.emplace(std::move(key), std::move(word_ids));
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  // Symbols form a doubly linked list over their initial positions; a merged-away symbol has id -1.
  struct Symbol {
    int32_t id;
    int32_t previous;
    int32_t next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto append_symbol = [&](int32_t id) {
    auto index = static_cast<int32_t>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1});
  };
  bool previous_was_unknown = false;
  for (char byte : word) {
    int32_t id = byte_ids_[static_cast<uint8_t>(byte)];
    if (id < 0) {
      if (unk_id_ && !(fuse_unk_ && previous_was_unknown)) append_symbol(*unk_id_);
      previous_was_unknown = unk_id_.has_value();
      continue;
    }
    append_symbol(id);
    previous_was_unknown = false;
  }

  struct Candidate {
    int32_t rank;
    int32_t position;
    int32_t merged_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t position) {
    if (position < 0 || symbols[position].next < 0) return;
    auto merge = merges_.find(pair_key(symbols[position].id, symbols[symbols[position].next].id));
    if (merge != merges_.end()) queue.push({merge->second.rank, position, merge->second.merged_id});
  };
  for (int32_t position = 0; position + 1 < static_cast<int32_t>(symbols.size()); ++position) consider(position);

  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.position];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto merge = merges_.find(pair_key(left.id, right.id));
    if (merge == merges_.end() || merge->second.merged_id != top.merged_id) continue;  // stale entry
    left.id = top.merged_id;
    left.next = right.next;
    right.id = -1;
    if (left.next >= 0) symbols[left.next].previous = top.position;
    consider(left.previous);
    consider(top.position);
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.id >= 0) ids.push_back(symbol.id);
  }
}

}  // namespace recgpt
