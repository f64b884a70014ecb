#include "engine/tokenizer_byte_level.h"

#include <array>

#include "engine/utf8.h"

namespace recgpt {
namespace {

bool stands_for_itself(uint8_t byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
}

struct ByteLevelTables {
  std::array<char32_t, 256> code_point_of_byte{};
  std::array<int16_t, 0x144> byte_of_code_point{};  // -1 where the code point is not in the alphabet

  ByteLevelTables() {
    byte_of_code_point.fill(-1);
    char32_t next_extra = 0x100;
    for (int byte = 0; byte < 256; ++byte) {
      char32_t code_point = stands_for_itself(static_cast<uint8_t>(byte)) ? static_cast<char32_t>(byte) : next_extra++;
      code_point_of_byte[byte] = code_point;
      byte_of_code_point[code_point] = static_cast<int16_t>(byte);
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables kTables;
  return kTables;
}

}  // namespace

char32_t byte_level_code_point(uint8_t byte) { return tables().code_point_of_byte[byte]; }

std::optional<uint8_t> byte_from_byte_level(char32_t code_point) {
  if (code_point >= tables().byte_of_code_point.size()) return std::nullopt;
  int16_t byte = tables().byte_of_code_point[code_point];
  if (byte < 0) return std::nullopt;
  return static_cast<uint8_t>(byte);
}

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string text;
  text.reserve(bytes.size() * 2);
  for (char byte : bytes) append_utf8(byte_level_code_point(static_cast<uint8_t>(byte)), text);
  return text;
}

std::optional<std::string> byte_level_to_bytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  size_t position = 0;
  while (position < token.size()) {
    Utf8Sequence sequence = next_utf8_sequence(token.substr(position));
    if (sequence.kind != Utf8Sequence::Kind::kComplete) return std::nullopt;
    std::optional<uint8_t> byte = byte_from_byte_level(sequence.code_point);
    if (!byte) return std::nullopt;
    bytes.push_back(static_cast<char>(*byte));
    position += sequence.length_bytes;
  }
  return bytes;
}

}  // namespace recgpt
