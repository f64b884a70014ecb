#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer_regex.h"

#include <pcre2.h>

namespace recgpt {

struct TokenizerRegex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

Result<TokenizerRegex> TokenizerRegex::compile(std::string_view pattern, Syntax syntax) {
  uint32_t options = PCRE2_UTF | PCRE2_UCP | (syntax == Syntax::kLiteral ? PCRE2_LITERAL : 0);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return invalid_argument("pre-tokenizer pattern '" + std::string(pattern) + "' does not compile at offset " +
                            std::to_string(error_offset) + ": " + reinterpret_cast<const char*>(message));
  }
  // Without JIT support (or with JIT refused by the system) matching still works through the interpreter.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  TokenizerRegex regex;
  auto owned = std::make_shared<Code>();
  owned->code = code;
  regex.code_ = std::move(owned);
  return regex;
}

void TokenizerRegex::split_isolated(std::string_view text,
                                    const std::function<void(std::string_view)>& on_piece) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(
      pcre2_match_data_create_from_pattern(code_->code, nullptr));
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_begin = 0;
  size_t search_from = 0;
  while (search_from < text.size()) {
    int result =
        pcre2_match(code_->code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, match_data.get(), nullptr);
    if (result == PCRE2_ERROR_JIT_STACKLIMIT) {
      result = pcre2_match(code_->code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                           match_data.get(), nullptr);
    }
    if (result < 0) break;  // no further match, or a resource limit: the rest is one piece
    PCRE2_SIZE* offsets = pcre2_get_ovector_pointer(match_data.get());
    size_t match_begin = offsets[0];
    size_t match_end = offsets[1];
    if (match_end <= match_begin) {
      // Empty match: step over one whole code point and search again.
      search_from = match_begin + 1;
      while (search_from < text.size() && (static_cast<unsigned char>(text[search_from]) & 0xC0) == 0x80) {
        ++search_from;
      }
      continue;
    }
    if (match_begin > gap_begin) on_piece(text.substr(gap_begin, match_begin - gap_begin));
    on_piece(text.substr(match_begin, match_end - match_begin));
    gap_begin = match_end;
    search_from = match_end;
  }
  if (gap_begin < text.size()) on_piece(text.substr(gap_begin));
}

}  // namespace recgpt
