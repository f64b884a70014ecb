// A compiled PCRE2 pattern (UTF + UCP, JIT when available) used to split text for pre-tokenization.
// Immutable after compile; copies share the compiled code; split() is safe to call from many threads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace recgpt {

class TokenizerRegex {
 public:
  enum class Syntax { kRegex, kLiteral };

  // kInvalidArgument with PCRE2's message and offset when `pattern` does not compile.
  static Result<TokenizerRegex> compile(std::string_view pattern, Syntax syntax = Syntax::kRegex);

  // Splits `text` (valid UTF-8) into its matches and the non-empty gaps between them, in order, as HF's
  // Split pre-tokenizer does with behavior "Isolated". Empty matches are skipped. Should the matcher give up
  // (a PCRE2 resource limit), the rest of the text is reported as one piece, so no byte is ever lost.
  void split_isolated(std::string_view text, const std::function<void(std::string_view)>& on_piece) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
};

}  // namespace recgpt
