// Fuzz target: the tokenizer on arbitrary bytes. The first byte picks what the rest is:
//   even: text for a fixed tokenizer (trained once from a fixed string, NFC normalizer, the four special tokens).
//         Checks decode(encode(x)) == NFC(x with invalid UTF-8 replaced by U+FFFD), that streamed text equals
//         decode, and that every id is inside the vocabulary.
//   odd:  a tokenizer.json. Whatever loads must encode and decode a fixed text without a finding.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/bpe_trainer.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_unicode.h"
#include "engine/utf8.h"

namespace recgpt {
namespace {

const Tokenizer& fixed_tokenizer() {
  static const Tokenizer kTokenizer = [] {
    std::vector<std::string> specials = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|entity|>"};
    std::string corpus =
        "Because you bought the Lumen Trail tent, we think you'll like merino socks. I'm sure they've said "
        "we'll go. 推荐理由：经常一起购买。 user=u_4821 event=view item=I100037 dwell_ms=5400\n\t  "
        "Привет 😀👍🏽 café 2024-03-14 $1,299.99\r\n";
    Result<std::string> json = train_byte_level_bpe(corpus, 340, specials);
    RECGPT_CHECK_MSG(json.is_ok(), json.status().to_string());
    Result<Tokenizer> tokenizer = Tokenizer::from_json(*json);
    RECGPT_CHECK_MSG(tokenizer.is_ok(), tokenizer.status().to_string());
    return tokenizer.value();
  }();
  return kTokenizer;
}

void check_text(std::string_view text) {
  const Tokenizer& tokenizer = fixed_tokenizer();
  std::vector<int32_t> ids = tokenizer.encode(text);
  for (int32_t id : ids) RECGPT_CHECK(id >= 0 && id < tokenizer.vocab_size());

  std::string valid;
  append_utf8_lossy(text, /*end_of_input=*/true, valid);
  std::string decoded = tokenizer.decode(ids);
  RECGPT_CHECK(decoded == normalize_nfc(valid));

  StreamingDetokenizer stream(tokenizer);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  RECGPT_CHECK(streamed == decoded);
}

void check_tokenizer_json(std::string_view json) {
  Result<Tokenizer> tokenizer = Tokenizer::from_json(json);
  if (!tokenizer.is_ok()) return;
  std::vector<int32_t> ids = tokenizer->encode("Hello, world! <|im_start|>你好 😀\n\n  x\xFF");
  std::string decoded = tokenizer->decode(ids);
  RECGPT_CHECK(is_valid_utf8(decoded));
}

}  // namespace
}  // namespace recgpt

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    recgpt::check_text(rest);
  } else {
    recgpt::check_tokenizer_json(rest);
  }
  return 0;
}
