// The GPT-2 byte-level alphabet used by byte-level BPE (GPT-2, Llama 3, Qwen2/3): each of the 256 byte
// values is written as one printable code point, so every token of the vocabulary is a string of those
// code points. '!'..'~', U+00A1..U+00AC and U+00AE..U+00FF stand for themselves; the other 68 bytes map,
// in increasing byte order, to U+0100..U+0143 (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace recgpt {

char32_t byte_level_code_point(uint8_t byte);

// The byte a byte-level code point stands for, or nullopt for a code point outside the alphabet.
std::optional<uint8_t> byte_from_byte_level(char32_t code_point);

// Raw bytes -> byte-level token text (UTF-8).
std::string bytes_to_byte_level(std::string_view bytes);

// Byte-level token text -> raw bytes; nullopt when the text is not valid UTF-8 or has a code point outside
// the alphabet.
std::optional<std::string> byte_level_to_bytes(std::string_view token);

}  // namespace recgpt
