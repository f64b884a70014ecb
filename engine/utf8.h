// UTF-8 scanning shared by the tokenizer and text streaming.
//
// Invalid input follows the Unicode "maximal subpart" practice (the same as Rust's
// String::from_utf8_lossy, Python's errors="replace" and the WHATWG decoder): each maximal prefix of a
// would-be sequence that cannot be completed becomes one U+FFFD.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace recgpt {

struct Utf8Sequence {
  enum class Kind {
    kComplete,    // a whole, valid code point of `length_bytes` bytes
    kIncomplete,  // the input ends inside a sequence that is valid so far (`length_bytes` bytes of it)
    kInvalid,     // a maximal subpart of `length_bytes` bytes that can never be completed
  };
  Kind kind;
  size_t length_bytes;
  char32_t code_point;  // meaningful for kComplete only
};

// Classifies the sequence starting at bytes[0]. `bytes` must not be empty.
Utf8Sequence next_utf8_sequence(std::string_view bytes);

// Appends `bytes` to `out`, replacing every invalid subpart by U+FFFD. When `end_of_input` is false, a trailing
// incomplete sequence is left unconsumed (it may be completed by later bytes); when true it becomes U+FFFD.
// Returns the number of bytes of `bytes` consumed.
size_t append_utf8_lossy(std::string_view bytes, bool end_of_input, std::string& out);

bool is_valid_utf8(std::string_view bytes);

// Appends the UTF-8 encoding of a valid Unicode scalar value.
void append_utf8(char32_t code_point, std::string& out);

}  // namespace recgpt
