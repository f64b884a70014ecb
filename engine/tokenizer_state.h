// Internal: what a loaded Tokenizer holds. Built once by tokenizer_json.cpp, then read-only.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer.h"
#include "engine/tokenizer_added_tokens.h"
#include "engine/tokenizer_bpe.h"
#include "engine/tokenizer_pre_tokenizer.h"

namespace recgpt {

struct TokenizerState {
  struct Token {
    std::string text;   // as written in tokenizer.json
    std::string bytes;  // what it decodes to
    bool special = false;
  };

  bool normalize_nfc = false;
  // Added tokens matched on the raw text (normalized == false) and on the normalized text.
  AddedTokenMatcher raw_added_tokens;
  AddedTokenMatcher normalized_added_tokens;
  PreTokenizer pre_tokenizer;
  BpeModel bpe;

  std::vector<Token> tokens;
  std::vector<int32_t> token_index_of_id;  // -1 where no token has the id
  std::unordered_map<std::string, int32_t> id_of_token;

  const Token* find(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= token_index_of_id.size()) return nullptr;
    int32_t index = token_index_of_id[id];
    return index < 0 ? nullptr : &tokens[index];
  }
};

}  // namespace recgpt
