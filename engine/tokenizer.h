// Byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json` (the format of GPT-2, Qwen2/Qwen3),
// giving the same ids as HF `tokenizers` for the features below.
//
// Supported: model BPE (vocab, merges as "a b" strings or [a, b] pairs, ignore_merges, unk_token, fuse_unk);
// added_tokens (content, special, single_word, lstrip, rstrip, normalized), recognised in text before
// normalization and pre-tokenization; normalizer null or NFC; pre_tokenizer ByteLevel, Split (Regex or String
// pattern, behavior Isolated, invert false) or a Sequence of those, which must include a ByteLevel;
// post_processor null or ByteLevel; decoder ByteLevel. Anything else is refused at load time with
// kUnimplemented; malformed JSON or inconsistent content gives kDataLoss; a pattern that does not compile gives
// kInvalidArgument. Regexes run on PCRE2 (UTF, UCP), whose syntax covers the Oniguruma patterns these
// tokenizers use.
//
// Text that is not valid UTF-8 cannot reach HF tokenizers (it takes Rust strings); here each invalid subpart
// is first replaced by U+FFFD (as Python's errors="replace" would), so encode() never fails.
//
// Thread safety: a Tokenizer is immutable after loading except for an internal, mutex-guarded word cache;
// every const method may be called from many threads. Copies are cheap and share state.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace recgpt {

struct TokenizerState;

class Tokenizer {
 public:
  // Parses the text of a tokenizer.json.
  static Result<Tokenizer> from_json(std::string_view json);
  // Reads and parses the tokenizer.json at `path`; kNotFound when it does not exist.
  static Result<Tokenizer> load(const std::string& path);

  // Token ids of `text`. Added tokens written in the text (e.g. "<|im_start|>") give their ids.
  std::vector<int32_t> encode(std::string_view text) const;

  // Text of `ids`, as HF's decode: ids that name no token are skipped, bytes that do not form valid UTF-8
  // become U+FFFD. With `skip_special_tokens`, special added tokens are left out.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token's text as written in tokenizer.json (byte-level alphabet for vocab tokens); nullopt if unknown.
  std::optional<std::string_view> id_to_token(int32_t id) const;
  // The bytes the token stands for when decoded (may be a partial UTF-8 sequence); empty if unknown.
  std::string_view token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;

  // One more than the largest id of the vocab and the added tokens (the rows an embedding table needs).
  int32_t vocab_size() const;

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerState> state) : state_(std::move(state)) {}

  std::shared_ptr<const TokenizerState> state_;
};

// Turns generated token ids into text one id at a time, for streaming responses. UTF-8 sequences split across
// tokens are held back until complete, so every returned piece is valid UTF-8; bytes that can never form a
// character become U+FFFD. The concatenation of all push() results and finish() equals
// Tokenizer::decode(all ids). Not thread-safe; one per generated sequence.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(Tokenizer tokenizer, bool skip_special_tokens = false)
      : tokenizer_(std::move(tokenizer)), skip_special_tokens_(skip_special_tokens) {}

  // Text completed by `token_id` (often empty while a multi-byte character is still partial).
  std::string push(int32_t token_id);
  // Text of any held-back bytes (an unfinished sequence gives U+FFFD); call once the sequence ends.
  std::string finish();

 private:
  Tokenizer tokenizer_;  // shares the caller's tokenizer state
  bool skip_special_tokens_;
  std::string pending_bytes_;  // a prefix of a UTF-8 sequence, at most 3 bytes
};

}  // namespace recgpt
