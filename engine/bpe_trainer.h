// Trains a byte-level BPE tokenizer in the layout of Qwen2/Qwen3's tokenizer.json, for the small models that
// `recgpt make-model` builds (real checkpoints ship their own tokenizer.json).
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace recgpt {

// Qwen2's (and Qwen3's) pre-tokenizer pattern.
inline constexpr std::string_view kQwen2PreTokenizerPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Returns the text of a complete tokenizer.json: NFC normalizer, Split(Qwen2 pattern, Isolated) + ByteLevel
// pre-tokenizer, ByteLevel post-processor and decoder, BPE model, merges as "a b" strings.
//
// The vocabulary has exactly `vocab_size` ids: the 256 byte symbols (ids 0..255, in code point order of the
// byte-level alphabet, as GPT-2 and Qwen2), then one token per merge, then `special_tokens` in the given order
// (added tokens with special = true, normalized = false). The corpus is NFC-normalized, special tokens written
// in it are cut out, and words come from the same pre-tokenizer the file describes. Each step merges the most
// frequent adjacent pair; ties go to the pair whose (left id, right id) is smallest, so the result depends only
// on the arguments.
//
// kInvalidArgument when vocab_size is too small for the byte symbols and special tokens, when a special token
// is empty or repeated, or when the corpus has too few distinct pairs to reach vocab_size.
Result<std::string> train_byte_level_bpe(std::string_view corpus, int vocab_size,
                                         std::span<const std::string> special_tokens);

}  // namespace recgpt
