#include "engine/tokenizer.h"

#include "engine/tokenizer_state.h"
#include "engine/tokenizer_unicode.h"
#include "engine/utf8.h"

namespace recgpt {

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    append_utf8_lossy(text, /*end_of_input=*/true, repaired);
    text = repaired;
  }
  const TokenizerState& state = *state_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  auto encode_piece = [&](std::string_view piece) { state.bpe.encode_word(piece, ids); };
  for (const AddedTokenMatcher::Segment& segment : state.raw_added_tokens.split(text)) {
    if (segment.token_id >= 0) {
      ids.push_back(segment.token_id);
      continue;
    }
    std::string normalized;
    std::string_view plain = segment.text;
    if (state.normalize_nfc) {
      normalized = normalize_nfc(plain);
      plain = normalized;
    }
    for (const AddedTokenMatcher::Segment& inner : state.normalized_added_tokens.split(plain)) {
      if (inner.token_id >= 0) {
        ids.push_back(inner.token_id);
      } else {
        state.pre_tokenizer.split(inner.text, encode_piece);
      }
    }
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    const TokenizerState::Token* token = state_->find(id);
    if (token == nullptr || (skip_special_tokens && token->special)) continue;
    bytes += token->bytes;
  }
  if (is_valid_utf8(bytes)) return bytes;
  std::string text;
  append_utf8_lossy(bytes, /*end_of_input=*/true, text);
  return text;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto found = state_->id_of_token.find(std::string(token));
  if (found == state_->id_of_token.end()) return std::nullopt;
  return found->second;
}

std::optional<std::string_view> Tokenizer::id_to_token(int32_t id) const {
  const TokenizerState::Token* token = state_->find(id);
  if (token == nullptr) return std::nullopt;
  return std::string_view(token->text);
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  const TokenizerState::Token* token = state_->find(id);
  return token == nullptr ? std::string_view() : std::string_view(token->bytes);
}

bool Tokenizer::is_special(int32_t id) const {
  const TokenizerState::Token* token = state_->find(id);
  return token != nullptr && token->special;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(state_->token_index_of_id.size()); }

std::string StreamingDetokenizer::push(int32_t token_id) {
  if (skip_special_tokens_ && tokenizer_.is_special(token_id)) return {};
  pending_bytes_ += tokenizer_.token_bytes(token_id);
  std::string text;
  size_t consumed = append_utf8_lossy(pending_bytes_, /*end_of_input=*/false, text);
  pending_bytes_.erase(0, consumed);
  return text;
}

std::string StreamingDetokenizer::finish() {
  std::string text;
  append_utf8_lossy(pending_bytes_, /*end_of_input=*/true, text);
  pending_bytes_.clear();
  return text;
}

}  // namespace recgpt
