#include "engine/bpe_trainer.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <set>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer_added_tokens.h"
#include "engine/tokenizer_byte_level.h"
#include "engine/tokenizer_pre_tokenizer.h"
#include "engine/tokenizer_unicode.h"
#include "engine/utf8.h"

namespace recgpt {
namespace {

using Pair = std::pair<int32_t, int32_t>;

uint64_t pair_key(Pair pair) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(pair.first)) << 32) | static_cast<uint32_t>(pair.second);
}

Pair pair_of_key(uint64_t key) { return {static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xFFFFFFFFu)}; }

// Distinct words of the corpus (raw bytes) and how often each occurs, in byte order.
Result<std::map<std::string, int64_t>> count_words(std::string_view corpus,
                                                   std::span<const std::string> special_tokens) {
  std::string valid;
  append_utf8_lossy(corpus, /*end_of_input=*/true, valid);
  std::vector<AddedTokenPattern> specials;
  for (size_t index = 0; index < special_tokens.size(); ++index) {
    specials.push_back({static_cast<int32_t>(index), special_tokens[index], false, false, false});
  }
  AddedTokenMatcher special_matcher(std::move(specials));
  RECGPT_ASSIGN_OR_RETURN(TokenizerRegex pattern, TokenizerRegex::compile(kQwen2PreTokenizerPattern));
  PreTokenizer pre_tokenizer;
  pre_tokenizer.add_split(std::move(pattern));
  pre_tokenizer.add_byte_level(false, std::nullopt);

  std::map<std::string, int64_t> counts;
  for (const AddedTokenMatcher::Segment& segment : special_matcher.split(valid)) {
    if (segment.token_id >= 0) continue;
    std::string normalized = normalize_nfc(segment.text);
    pre_tokenizer.split(normalized, [&](std::string_view word) { ++counts[std::string(word)]; });
  }
  return counts;
}

class MergeLearner {
 public:
  explicit MergeLearner(const std::map<std::string, int64_t>& word_counts) {
    std::vector<std::pair<char32_t, uint8_t>> alphabet;
    for (int byte = 0; byte < 256; ++byte) {
      alphabet.emplace_back(byte_level_code_point(static_cast<uint8_t>(byte)), static_cast<uint8_t>(byte));
    }
    std::sort(alphabet.begin(), alphabet.end());
    std::vector<int32_t> id_of_byte(256);
    for (const auto& [code_point, byte] : alphabet) {
      id_of_byte[byte] = static_cast<int32_t>(token_bytes_.size());
      add_token(std::string(1, static_cast<char>(byte)));
    }
    for (const auto& [word, count] : word_counts) {
      std::vector<int32_t> symbols;
      for (char byte : word) symbols.push_back(id_of_byte[static_cast<uint8_t>(byte)]);
      words_.push_back(std::move(symbols));
      word_counts_.push_back(count);
    }
    for (size_t index = 0; index < words_.size(); ++index) {
      add_pairs(static_cast<int32_t>(index), +1, /*only_with_id=*/-1);
    }
    for (const auto& [key, count] : pair_counts_) queue_.push({count, pair_of_key(key)});
  }

  // Learns merges until the vocabulary has `target_size` tokens; false when the corpus runs out of pairs.
  bool learn_until(size_t target_size) {
    while (token_bytes_.size() < target_size) {
      if (queue_.empty()) return false;
      Candidate top = queue_.top();
      queue_.pop();
      int64_t current = pair_counts_[pair_key(top.pair)];
      if (current != top.count) {
        if (current > 0) queue_.push({current, top.pair});
        continue;
      }
      if (current <= 0) return false;
      apply_merge(top.pair);
    }
    return true;
  }

  const std::vector<std::string>& token_bytes() const { return token_bytes_; }
  const std::vector<Pair>& merges() const { return merges_; }

 private:
  struct Candidate {
    int64_t count;
    Pair pair;
    // Highest count first; on a tie the smallest pair.
    bool operator<(const Candidate& other) const {
      return count != other.count ? count < other.count : pair > other.pair;
    }
  };

  int32_t add_token(std::string bytes) {
    auto [found, inserted] = id_of_bytes_.try_emplace(bytes, static_cast<int32_t>(token_bytes_.size()));
    if (inserted) token_bytes_.push_back(std::move(bytes));
    return found->second;
  }

  // Adds `sign` x the word's count to each adjacent pair of word `index` (only pairs containing `only_with_id`
  // when it is not -1 are newly indexed in pair_words_).
  void add_pairs(int32_t index, int sign, int32_t only_with_id) {
    const std::vector<int32_t>& symbols = words_[index];
    for (size_t position = 0; position + 1 < symbols.size(); ++position) {
      Pair pair{symbols[position], symbols[position + 1]};
      uint64_t key = pair_key(pair);
      pair_counts_[key] += sign * word_counts_[index];
      if (sign > 0 && (only_with_id < 0 || pair.first == only_with_id || pair.second == only_with_id)) {
        pair_words_[key].push_back(index);
        if (only_with_id >= 0) touched_pairs_.insert(key);
      }
    }
  }

  void apply_merge(Pair pair) {
    int32_t merged_id = add_token(token_bytes_[pair.first] + token_bytes_[pair.second]);
    merges_.push_back(pair);
    std::vector<int32_t> affected = std::move(pair_words_[pair_key(pair)]);
    pair_words_.erase(pair_key(pair));
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    touched_pairs_.clear();
    for (int32_t index : affected) {
      std::vector<int32_t>& symbols = words_[index];
      bool contains = false;
      for (size_t position = 0; position + 1 < symbols.size() && !contains; ++position) {
        contains = symbols[position] == pair.first && symbols[position + 1] == pair.second;
      }
      if (!contains) continue;
      add_pairs(index, -1, -1);
      std::vector<int32_t> merged;
      merged.reserve(symbols.size());
      for (size_t position = 0; position < symbols.size(); ++position) {
        if (position + 1 < symbols.size() && symbols[position] == pair.first && symbols[position + 1] == pair.second) {
          merged.push_back(merged_id);
          ++position;
        } else {
          merged.push_back(symbols[position]);
        }
      }
      symbols = std::move(merged);
      add_pairs(index, +1, merged_id);
    }
    for (uint64_t key : touched_pairs_) {
      int64_t count = pair_counts_[key];
      if (count > 0) queue_.push({count, pair_of_key(key)});
    }
  }

  std::vector<std::vector<int32_t>> words_;
  std::vector<int64_t> word_counts_;
  std::vector<std::string> token_bytes_;  // by id
  std::unordered_map<std::string, int32_t> id_of_bytes_;
  std::vector<Pair> merges_;
  std::unordered_map<uint64_t, int64_t> pair_counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words_;  // words that may hold the pair
  std::set<uint64_t> touched_pairs_;                               // pairs created by the current merge
  std::priority_queue<Candidate> queue_;
};

nlohmann::ordered_json byte_level_component() {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
}

std::string tokenizer_json(const MergeLearner& learner, std::span<const std::string> special_tokens) {
  using Json = nlohmann::ordered_json;
  Json vocab = Json::object();
  for (size_t id = 0; id < learner.token_bytes().size(); ++id) {
    vocab[bytes_to_byte_level(learner.token_bytes()[id])] = id;
  }
  Json merges = Json::array();
  for (const Pair& pair : learner.merges()) {
    merges.push_back(bytes_to_byte_level(learner.token_bytes()[pair.first]) + " " +
                     bytes_to_byte_level(learner.token_bytes()[pair.second]));
  }
  Json added_tokens = Json::array();
  for (size_t index = 0; index < special_tokens.size(); ++index) {
    added_tokens.push_back({{"id", learner.token_bytes().size() + index},
                            {"content", special_tokens[index]},
                            {"single_word", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"normalized", false},
                            {"special", true}});
  }
  Json split = {{"type", "Split"},
                {"pattern", {{"Regex", std::string(kQwen2PreTokenizerPattern)}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  Json model = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", std::move(vocab)},
                {"merges", std::move(merges)}};
  Json root = {{"version", "1.0"},
               {"truncation", nullptr},
               {"padding", nullptr},
               {"added_tokens", std::move(added_tokens)},
               {"normalizer", {{"type", "NFC"}}},
               {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {std::move(split), byte_level_component()}}}},
               {"post_processor", byte_level_component()},
               {"decoder", byte_level_component()},
               {"model", std::move(model)}};
  return root.dump(2) + "\n";
}

Status check_special_tokens(std::span<const std::string> special_tokens) {
  std::set<std::string_view> seen;
  for (const std::string& token : special_tokens) {
    if (token.empty()) return invalid_argument("special tokens must not be empty");
    if (!is_valid_utf8(token)) return invalid_argument("special token is not valid UTF-8");
    if (!seen.insert(token).second) return invalid_argument("special token '" + token + "' is repeated");
  }
  return Status::ok();
}

}  // namespace

Result<std::string> train_byte_level_bpe(std::string_view corpus, int vocab_size,
                                         std::span<const std::string> special_tokens) {
  RECGPT_RETURN_IF_ERROR(check_special_tokens(special_tokens));
  int64_t minimum = 256 + static_cast<int64_t>(special_tokens.size());
  if (vocab_size < minimum) {
    return invalid_argument("vocab_size " + std::to_string(vocab_size) + " is below the " + std::to_string(minimum) +
                            " ids that the byte symbols and special tokens need");
  }
  RECGPT_ASSIGN_OR_RETURN(auto word_counts, count_words(corpus, special_tokens));
  MergeLearner learner(word_counts);
  size_t target = static_cast<size_t>(vocab_size) - special_tokens.size();
  if (!learner.learn_until(target)) {
    return invalid_argument("the corpus (" + std::to_string(corpus.size()) + " bytes) yields only " +
                            std::to_string(learner.token_bytes().size() + special_tokens.size()) +
                            " tokens; vocab_size " + std::to_string(vocab_size) + " needs a larger corpus");
  }
  return tokenizer_json(learner, special_tokens);
}

}  // namespace recgpt
