// Decoding constrained to a list of choices from a ChoiceTrie: the output is up to `max_items` distinct choices,
// each written as the tokenizer writes it, separated by `separator` (a line break token), and ended by `end` (a
// stop token) after at least one; e.g. "red dress\nsummer\n<|im_end|>". The tag experts, the arbiter (choosing
// among the experts' tags) and the completions API's `allowed` extension decode under it.
//
// Works on whatever node samples the tokens: it reads the generated tokens from `tokens` past the prompt, so a
// decode node that continues from a prefill node's first token picks up its state from that token.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/choice_trie.h"
#include "engine/logits_processor.h"

namespace recgpt {

struct ChoiceListShape {
  int32_t max_items = 1;
  int32_t separator = -1;  // token written between items
  int32_t end = -1;        // token that ends the list (a stop token of the call)
};

class ChoiceListProcessor final : public LogitsProcessor {
 public:
  // `prompt_tokens`: where generated tokens begin in `tokens`.
  ChoiceListProcessor(std::shared_ptr<const ChoiceTrie> trie, ChoiceListShape shape, size_t prompt_tokens);

  // Leaves finite only the tokens that keep the output a valid list; none once the list ended or a token off
  // the list arrived (the generator then ends the sequence: FinishReason::kConstraint).
  void process(std::span<float> logits, std::span<const int32_t> tokens) override;

  // Whether `token` is allowed next, after the tokens consumed so far.
  bool allows(int32_t token) const;
  // All the tokens allowed next (sorted): what process() leaves finite.
  std::vector<int32_t> allowed() const;
  // Choices completed so far, in order.
  const std::vector<int32_t>& items() const { return items_; }
  // Consumes a generated token (process() does this for the tokens it has not seen). False: not allowed.
  bool advance(int32_t token);

 private:
  bool available(int32_t node) const;
  // The current node ends a choice not listed yet (so the item may end here).
  bool at_unlisted_choice() const;
  void complete_item();

  std::shared_ptr<const ChoiceTrie> trie_;
  ChoiceListShape shape_;
  size_t consumed_;  // tokens of `tokens` already advanced over (the prompt counts as consumed)
  int32_t node_ = ChoiceTrie::kRoot;
  std::vector<int32_t> path_;                     // nodes of the item being written
  std::unordered_map<int32_t, int32_t> crossed_;  // node -> completed choices at or below it
  std::vector<int32_t> items_;
  bool ended_ = false;
  bool broken_ = false;  // a token outside the list arrived
};

// Output text of a list (as decoded) back to its items; items not in the trie are returned in `unknown`.
struct ParsedChoiceList {
  std::vector<std::string> items;
  std::vector<std::string> unknown;
};
ParsedChoiceList parse_choice_list(const ChoiceTrie& trie, std::string_view text);

}  // namespace recgpt
