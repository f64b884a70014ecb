#include "engine/utf8.h"

namespace recgpt {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Allowed range of the second byte after `lead` (Unicode Table 3-7); the later bytes are always 80..BF.
struct SecondByteRange {
  unsigned char low;
  unsigned char high;
};

SecondByteRange second_byte_range(unsigned char lead) {
  if (lead == 0xE0) return {0xA0, 0xBF};
  if (lead == 0xED) return {0x80, 0x9F};
  if (lead == 0xF0) return {0x90, 0xBF};
  if (lead == 0xF4) return {0x80, 0x8F};
  return {0x80, 0xBF};
}

}  // namespace

Utf8Sequence next_utf8_sequence(std::string_view bytes) {
  auto lead = static_cast<unsigned char>(bytes[0]);
  if (lead < 0x80) return {Utf8Sequence::Kind::kComplete, 1, lead};
  size_t length;
  char32_t code_point;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    code_point = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    code_point = lead & 0x0F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return {Utf8Sequence::Kind::kInvalid, 1, 0};
  }
  SecondByteRange range = second_byte_range(lead);
  for (size_t i = 1; i < length; ++i) {
    if (i == bytes.size()) return {Utf8Sequence::Kind::kIncomplete, i, 0};
    auto byte = static_cast<unsigned char>(bytes[i]);
    unsigned char low = i == 1 ? range.low : 0x80;
    unsigned char high = i == 1 ? range.high : 0xBF;
    if (byte < low || byte > high) return {Utf8Sequence::Kind::kInvalid, i, 0};
    code_point = (code_point << 6) | (byte & 0x3F);
  }
  return {Utf8Sequence::Kind::kComplete, length, code_point};
}

size_t append_utf8_lossy(std::string_view bytes, bool end_of_input, std::string& out) {
  size_t position = 0;
  while (position < bytes.size()) {
    size_t run_end = position;
    while (run_end < bytes.size() && static_cast<unsigned char>(bytes[run_end]) < 0x80) ++run_end;
    out.append(bytes.substr(position, run_end - position));
    position = run_end;
    if (position == bytes.size()) break;
    Utf8Sequence sequence = next_utf8_sequence(bytes.substr(position));
    if (sequence.kind == Utf8Sequence::Kind::kIncomplete && !end_of_input) return position;
    if (sequence.kind == Utf8Sequence::Kind::kComplete) {
      out.append(bytes.substr(position, sequence.length_bytes));
    } else {
      out.append(kReplacementCharacter);
    }
    position += sequence.length_bytes;
  }
  return position;
}

bool is_valid_utf8(std::string_view bytes) {
  size_t position = 0;
  while (position < bytes.size()) {
    if (static_cast<unsigned char>(bytes[position]) < 0x80) {
      ++position;
      continue;
    }
    Utf8Sequence sequence = next_utf8_sequence(bytes.substr(position));
    if (sequence.kind != Utf8Sequence::Kind::kComplete) return false;
    position += sequence.length_bytes;
  }
  return true;
}

void append_utf8(char32_t code_point, std::string& out) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

}  // namespace recgpt
