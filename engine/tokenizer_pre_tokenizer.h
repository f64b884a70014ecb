// Pre-tokenization of byte-level BPE tokenizers: a sequence of steps that cut text into the pieces ("words")
// BPE encodes one by one. Steps are HF's Split (behavior Isolated, invert false) and ByteLevel. Pieces stay raw
// UTF-8 bytes here; mapping them to the byte-level alphabet is implicit in the BPE model's byte symbols.
#pragma once

#include <functional>
#include <optional>
#include <string_view>
#include <vector>

#include "engine/tokenizer_regex.h"

namespace recgpt {

// GPT-2's pattern, used by ByteLevel when use_regex is true.
inline constexpr std::string_view kGpt2PreTokenizerPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class PreTokenizer {
 public:
  // Split{pattern, behavior Isolated, invert false}.
  void add_split(TokenizerRegex pattern);
  // ByteLevel{add_prefix_space, use_regex}: prefixes a space to a piece that does not start with one, then
  // splits with GPT-2's pattern when `gpt2_pattern` is given.
  void add_byte_level(bool add_prefix_space, std::optional<TokenizerRegex> gpt2_pattern);

  // Calls on_piece for every non-empty piece of `text` (valid UTF-8), in order.
  void split(std::string_view text, const std::function<void(std::string_view)>& on_piece) const;

 private:
  struct Step {
    std::optional<TokenizerRegex> regex;
    bool add_prefix_space = false;
  };
  void run_from(size_t step_index, std::string_view text, const std::function<void(std::string_view)>& on_piece) const;

  std::vector<Step> steps_;
};

}  // namespace recgpt
