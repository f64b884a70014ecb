#include "common/hex.h"

namespace recgpt {
namespace {

int digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string to_hex(std::span<const std::byte> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text;
  text.reserve(bytes.size() * 2);
  for (std::byte value : bytes) {
    text += kDigits[std::to_integer<int>(value) >> 4];
    text += kDigits[std::to_integer<int>(value) & 0xf];
  }
  return text;
}

Result<std::vector<std::byte>> from_hex(std::string_view text) {
  if (text.size() % 2 != 0) return invalid_argument("hexadecimal text of odd length " + std::to_string(text.size()));
  std::vector<std::byte> bytes(text.size() / 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    int high = digit_value(text[2 * i]), low = digit_value(text[2 * i + 1]);
    if (high < 0 || low < 0) {
      return invalid_argument("not a hexadecimal digit at offset " + std::to_string(high < 0 ? 2 * i : 2 * i + 1));
    }
    bytes[i] = static_cast<std::byte>(high << 4 | low);
  }
  return bytes;
}

}  // namespace recgpt
