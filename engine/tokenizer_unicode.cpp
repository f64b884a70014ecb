#include "engine/tokenizer_unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <vector>

#include "common/status.h"

namespace recgpt {
namespace {

bool is_ascii(std::string_view text) {
  for (char byte : text) {
    if (static_cast<unsigned char>(byte) >= 0x80) return false;
  }
  return true;
}

std::u16string to_utf16(std::string_view text) {
  int32_t length = 0;
  UErrorCode status = U_ZERO_ERROR;
  u_strFromUTF8(nullptr, 0, &length, text.data(), static_cast<int32_t>(text.size()), &status);
  std::u16string utf16(static_cast<size_t>(length), u'\0');
  status = U_ZERO_ERROR;
  u_strFromUTF8(utf16.data(), length, &length, text.data(), static_cast<int32_t>(text.size()), &status);
  RECGPT_CHECK_MSG(U_SUCCESS(status), u_errorName(status));
  return utf16;
}

std::string to_utf8(const std::u16string& text) {
  int32_t length = 0;
  UErrorCode status = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &length, text.data(), static_cast<int32_t>(text.size()), &status);
  std::string utf8(static_cast<size_t>(length), '\0');
  status = U_ZERO_ERROR;
  u_strToUTF8(utf8.data(), length, &length, text.data(), static_cast<int32_t>(text.size()), &status);
  RECGPT_CHECK_MSG(U_SUCCESS(status), u_errorName(status));
  return utf8;
}

}  // namespace

std::string normalize_nfc(std::string_view text) {
  if (is_ascii(text)) return std::string(text);
  RECGPT_CHECK_MSG(text.size() < (1u << 30), "text too long for ICU normalization");
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&status);
  RECGPT_CHECK_MSG(U_SUCCESS(status), u_errorName(status));
  std::u16string source = to_utf16(text);
  auto source_length = static_cast<int32_t>(source.size());
  if (unorm2_isNormalized(nfc, source.data(), source_length, &status) && U_SUCCESS(status)) {
    return std::string(text);
  }
  status = U_ZERO_ERROR;
  int32_t length = unorm2_normalize(nfc, source.data(), source_length, nullptr, 0, &status);
  std::u16string normalized(static_cast<size_t>(length), u'\0');
  status = U_ZERO_ERROR;
  unorm2_normalize(nfc, source.data(), source_length, normalized.data(), length, &status);
  RECGPT_CHECK_MSG(U_SUCCESS(status), u_errorName(status));
  return to_utf8(normalized);
}

bool is_unicode_white_space(char32_t code_point) {
  return u_hasBinaryProperty(static_cast<UChar32>(code_point), UCHAR_WHITE_SPACE);
}

bool is_unicode_word_character(char32_t code_point) {
  auto c = static_cast<UChar32>(code_point);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
  switch (u_charType(c)) {
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION: return true;
    default: return false;
  }
}

}  // namespace recgpt
