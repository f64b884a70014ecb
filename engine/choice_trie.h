// A set of strings the model may emit (a tag catalogue, an arbiter's candidates, a request's allowed values),
// compiled once to a trie over each string's token ids as the tokenizer writes it. Immutable after build and
// shared by every sequence that decodes under it (engine/choice_list_processor.h walks it).
//
// Each node knows how many choices end at or below it, so a walker that crossed some choices off (no repeats)
// can tell in O(1) whether a branch still leads anywhere. 100K choices of a few tokens each build in well under
// a second and take a few MB.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "engine/tokenizer.h"

namespace recgpt {

class ChoiceTrie {
 public:
  static constexpr int32_t kRoot = 0;

  // Tokenizes every choice; repeated choices count once. kInvalidArgument naming the choice for an empty one,
  // one holding a line break, or one whose tokens include a special token.
  static Result<std::shared_ptr<const ChoiceTrie>> build(const Tokenizer& tokenizer,
                                                         std::span<const std::string> choices);
  // A catalogue file: one choice per line (trailing '\r' and surrounding blanks trimmed, blank lines skipped).
  // kNotFound / kIoError when it cannot be read; build()'s errors, naming the file and line.
  static Result<std::shared_ptr<const ChoiceTrie>> load(const Tokenizer& tokenizer, const std::string& path);
  // The same from a catalogue's text; `source` names it in errors (as the file would be).
  static Result<std::shared_ptr<const ChoiceTrie>> parse(const Tokenizer& tokenizer, std::string_view text,
                                                         const std::string& source);

  size_t num_choices() const { return choices_.size(); }
  size_t num_nodes() const { return nodes_.size(); }
  const std::string& choice(int32_t index) const { return choices_[static_cast<size_t>(index)]; }
  std::span<const int32_t> choice_tokens(int32_t index) const;

  // The child of `node` along `token`, or -1.
  int32_t child(int32_t node, int32_t token) const;
  // The children of `node` as (token, child) pairs, by token.
  struct Edge {
    int32_t token;
    int32_t child;
  };
  std::span<const Edge> edges(int32_t node) const;
  // The choice that ends at `node`, or -1.
  int32_t choice_at(int32_t node) const { return nodes_[static_cast<size_t>(node)].choice; }
  // Choices that end at `node` or below it.
  int32_t choices_below(int32_t node) const { return nodes_[static_cast<size_t>(node)].choices_below; }
  // The index of the choice whose text is `text`, or -1.
  int32_t find(std::string_view text) const;

 private:
  // build() with errors naming choice i as `name_of(i)`.
  static Result<std::shared_ptr<const ChoiceTrie>> build_named(const Tokenizer& tokenizer,
                                                               std::span<const std::string> choices,
                                                               const std::function<std::string(size_t)>& name_of);

  struct Node {
    int32_t first_edge = 0;
    int32_t num_edges = 0;
    int32_t choice = -1;
    int32_t choices_below = 0;
  };

  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::vector<std::string> choices_;
  std::vector<int32_t> token_offsets_;  // choice i's tokens: tokens_[token_offsets_[i], token_offsets_[i + 1])
  std::vector<int32_t> tokens_;
  std::unordered_map<std::string, int32_t> index_;  // every text given (repeats too) -> its choice
};

}  // namespace recgpt
