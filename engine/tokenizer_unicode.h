// Unicode services of the tokenizer, backed by ICU: NFC normalization and the character classes HF uses
// around added tokens (Rust regex's \s and \w).
#pragma once

#include <string>
#include <string_view>

namespace recgpt {

// NFC form of `text` (valid UTF-8).
std::string normalize_nfc(std::string_view text);

// Unicode White_Space (what HF's `\s` matches when stripping around added tokens).
bool is_unicode_white_space(char32_t code_point);

// Alphabetic, marks, decimal digits, connector punctuation and join controls (Unicode `\w`).
bool is_unicode_word_character(char32_t code_point);

}  // namespace recgpt
