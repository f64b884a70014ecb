// Tokenizer::from_json and Tokenizer::load: validation of tokenizer.json and construction of the state.
#include <nlohmann/json.hpp>

#include "common/mapped_file.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_byte_level.h"
#include "engine/tokenizer_state.h"
#include "engine/tokenizer_unicode.h"

namespace recgpt {
namespace {

using Json = nlohmann::json;

// Ids are dense in real tokenizers (the largest vocabularies have ~262K entries); the bound keeps a hostile
// file from making us allocate an id table of billions of entries.
constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;
constexpr int kMaxPreTokenizerNesting = 8;

// A member that is absent or null reads as nullptr.
const Json* member(const Json& object, const char* key) {
  auto found = object.find(key);
  if (found == object.end() || found->is_null()) return nullptr;
  return &*found;
}

Result<bool> bool_member(const Json& object, const char* key, bool fallback, const std::string& where) {
  const Json* value = member(object, key);
  if (value == nullptr) return fallback;
  if (!value->is_boolean()) return data_loss(where + "." + key + " must be true or false");
  return value->get<bool>();
}

Result<std::optional<std::string>> string_member(const Json& object, const char* key, const std::string& where) {
  const Json* value = member(object, key);
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) return data_loss(where + "." + key + " must be a string");
  return std::optional<std::string>(value->get<std::string>());
}

Result<std::string> type_of(const Json& component, const std::string& where) {
  if (!component.is_object()) return data_loss(where + " must be an object");
  RECGPT_ASSIGN_OR_RETURN(std::optional<std::string> type, string_member(component, "type", where));
  if (!type) return data_loss(where + " has no \"type\"");
  return *type;
}

Result<int32_t> token_id(const Json& value, const std::string& where) {
  if (!value.is_number_integer()) return data_loss(where + " must be an integer token id");
  auto id = value.get<int64_t>();
  if (id < 0 || id > kMaxTokenId) {
    return data_loss(where + " = " + std::to_string(id) + " is outside [0, " + std::to_string(kMaxTokenId) + "]");
  }
  return static_cast<int32_t>(id);
}

Status check_absent_or_null(const Json& root, const char* key) {
  if (member(root, key) != nullptr) {
    return unimplemented(std::string("tokenizer.json \"") + key + "\" is set; only null is supported");
  }
  return Status::ok();
}

Result<BpeModelSpec> parse_model(const Json& model) {
  if (!model.is_object()) return data_loss("model must be an object");
  RECGPT_ASSIGN_OR_RETURN(std::optional<std::string> type, string_member(model, "type", "model"));
  if (type && *type != "BPE") return unimplemented("model type '" + *type + "' is not supported (only BPE)");
  const Json* vocab = member(model, "vocab");
  const Json* merges = member(model, "merges");
  if (vocab == nullptr || !vocab->is_object()) return data_loss("model.vocab must be an object of token -> id");
  if (merges == nullptr || !merges->is_array()) return data_loss("model.merges must be an array");

  const Json* dropout = member(model, "dropout");
  if (dropout != nullptr && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return unimplemented("model.dropout is not supported (only null)");
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    RECGPT_ASSIGN_OR_RETURN(std::optional<std::string> value, string_member(model, affix, "model"));
    if (value && !value->empty()) return unimplemented(std::string("model.") + affix + " is not supported");
  }
  RECGPT_ASSIGN_OR_RETURN(bool byte_fallback, bool_member(model, "byte_fallback", false, "model"));
  if (byte_fallback) return unimplemented("model.byte_fallback is not supported by byte-level BPE");

  BpeModelSpec spec;
  RECGPT_ASSIGN_OR_RETURN(spec.unk_token, string_member(model, "unk_token", "model"));
  RECGPT_ASSIGN_OR_RETURN(spec.fuse_unk, bool_member(model, "fuse_unk", false, "model"));
  RECGPT_ASSIGN_OR_RETURN(spec.ignore_merges, bool_member(model, "ignore_merges", false, "model"));
  spec.vocab.reserve(vocab->size());
  for (const auto& [token, id_value] : vocab->items()) {
    RECGPT_ASSIGN_OR_RETURN(int32_t id, token_id(id_value, "model.vocab[\"" + token + "\"]"));
    spec.vocab.emplace_back(token, id);
  }
  spec.merges.reserve(merges->size());
  for (size_t index = 0; index < merges->size(); ++index) {
    const Json& merge = (*merges)[index];
    std::string where = "model.merges[" + std::to_string(index) + "]";
    if (merge.is_string()) {
      const auto& text = merge.get_ref<const std::string&>();
      size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return data_loss(where + " = '" + text + "' must be two tokens separated by one space");
      }
      spec.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      spec.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return data_loss(where + " must be \"a b\" or [\"a\", \"b\"]");
    }
  }
  return spec;
}

Result<bool> parse_normalizer(const Json* normalizer) {
  if (normalizer == nullptr) return false;
  RECGPT_ASSIGN_OR_RETURN(std::string type, type_of(*normalizer, "normalizer"));
  if (type == "NFC") return true;
  if (type == "Sequence") {
    const Json* members = member(*normalizer, "normalizers");
    if (members == nullptr || !members->is_array()) return data_loss("normalizer.normalizers must be an array");
    bool nfc = false;
    for (const Json& inner : *members) {
      RECGPT_ASSIGN_OR_RETURN(std::string inner_type, type_of(inner, "normalizer.normalizers[]"));
      if (inner_type != "NFC") return unimplemented("normalizer '" + inner_type + "' is not supported (only NFC)");
      nfc = true;
    }
    return nfc;
  }
  return unimplemented("normalizer '" + type + "' is not supported (only null or NFC)");
}

// Appends the steps of `config` to `pre_tokenizer`; counts the ByteLevel steps in `byte_level_steps`.
Status parse_pre_tokenizer(const Json& config, const std::string& where, int nesting, PreTokenizer& pre_tokenizer,
                           int& byte_level_steps) {
  if (nesting > kMaxPreTokenizerNesting) return unimplemented(where + ": Sequence nested too deeply");
  RECGPT_ASSIGN_OR_RETURN(std::string type, type_of(config, where));
  if (type == "Sequence") {
    const Json* steps = member(config, "pretokenizers");
    if (steps == nullptr || !steps->is_array()) return data_loss(where + ".pretokenizers must be an array");
    for (size_t index = 0; index < steps->size(); ++index) {
      RECGPT_RETURN_IF_ERROR(parse_pre_tokenizer((*steps)[index],
                                                 where + ".pretokenizers[" + std::to_string(index) + "]", nesting + 1,
                                                 pre_tokenizer, byte_level_steps));
    }
    return Status::ok();
  }
  if (type == "ByteLevel") {
    // Defaults are those of HF's ByteLevel::default().
    RECGPT_ASSIGN_OR_RETURN(bool add_prefix_space, bool_member(config, "add_prefix_space", true, where));
    RECGPT_ASSIGN_OR_RETURN(bool use_regex, bool_member(config, "use_regex", true, where));
    std::optional<TokenizerRegex> gpt2;
    if (use_regex) {
      RECGPT_ASSIGN_OR_RETURN(gpt2, TokenizerRegex::compile(kGpt2PreTokenizerPattern));
    }
    pre_tokenizer.add_byte_level(add_prefix_space, std::move(gpt2));
    ++byte_level_steps;
    return Status::ok();
  }
  if (type != "Split") return unimplemented(where + ": pre-tokenizer '" + type + "' is not supported");
  RECGPT_ASSIGN_OR_RETURN(std::optional<std::string> behavior, string_member(config, "behavior", where));
  if (behavior != "Isolated") {
    return unimplemented(where + ": Split behavior '" + behavior.value_or("") + "' is not supported (only Isolated)");
  }
  RECGPT_ASSIGN_OR_RETURN(bool invert, bool_member(config, "invert", false, where));
  if (invert) return unimplemented(where + ": Split with invert true is not supported");
  const Json* pattern = member(config, "pattern");
  if (pattern == nullptr || !pattern->is_object()) return data_loss(where + ".pattern must be an object");
  RECGPT_ASSIGN_OR_RETURN(std::optional<std::string> regex, string_member(*pattern, "Regex", where + ".pattern"));
  RECGPT_ASSIGN_OR_RETURN(std::optional<std::string> literal, string_member(*pattern, "String", where + ".pattern"));
  if (regex.has_value() == literal.has_value()) return data_loss(where + ".pattern must have one of Regex, String");
  Result<TokenizerRegex> compiled =
      regex ? TokenizerRegex::compile(*regex) : TokenizerRegex::compile(*literal, TokenizerRegex::Syntax::kLiteral);
  if (!compiled.is_ok()) return compiled.status().with_context(where);
  pre_tokenizer.add_split(std::move(compiled).value());
  return Status::ok();
}

Status check_byte_level_component(const Json* component, const char* name, bool required) {
  if (component == nullptr) {
    if (!required) return Status::ok();
    return unimplemented(std::string(name) + " is null; only ByteLevel is supported");
  }
  RECGPT_ASSIGN_OR_RETURN(std::string type, type_of(*component, name));
  if (type != "ByteLevel") {
    return unimplemented(std::string(name) + " '" + type + "' is not supported (only ByteLevel)");
  }
  return Status::ok();
}

void add_token(TokenizerState& state, int32_t id, std::string text, bool special) {
  std::string bytes = byte_level_to_bytes(text).value_or(text);
  if (static_cast<size_t>(id) >= state.token_index_of_id.size()) state.token_index_of_id.resize(id + 1, -1);
  int32_t& index = state.token_index_of_id[id];
  if (index < 0) {
    index = static_cast<int32_t>(state.tokens.size());
    state.tokens.push_back({});
  }
  state.id_of_token[text] = id;
  state.tokens[index] = {std::move(text), std::move(bytes), special};
}

Status parse_added_tokens(const Json* added_tokens, TokenizerState& state) {
  if (added_tokens == nullptr) return Status::ok();
  if (!added_tokens->is_array()) return data_loss("added_tokens must be an array");
  std::vector<AddedTokenPattern> raw;
  std::vector<AddedTokenPattern> normalized;
  for (size_t index = 0; index < added_tokens->size(); ++index) {
    const Json& token = (*added_tokens)[index];
    std::string where = "added_tokens[" + std::to_string(index) + "]";
    if (!token.is_object()) return data_loss(where + " must be an object");
    const Json* id_value = member(token, "id");
    if (id_value == nullptr) return data_loss(where + " has no id");
    AddedTokenPattern pattern;
    RECGPT_ASSIGN_OR_RETURN(pattern.id, token_id(*id_value, where + ".id"));
    RECGPT_ASSIGN_OR_RETURN(std::optional<std::string> content, string_member(token, "content", where));
    if (!content || content->empty()) return data_loss(where + ".content must be a non-empty string");
    pattern.content = *content;
    RECGPT_ASSIGN_OR_RETURN(bool special, bool_member(token, "special", false, where));
    RECGPT_ASSIGN_OR_RETURN(bool is_normalized, bool_member(token, "normalized", !special, where));
    RECGPT_ASSIGN_OR_RETURN(pattern.single_word, bool_member(token, "single_word", false, where));
    RECGPT_ASSIGN_OR_RETURN(pattern.lstrip, bool_member(token, "lstrip", false, where));
    RECGPT_ASSIGN_OR_RETURN(pattern.rstrip, bool_member(token, "rstrip", false, where));
    add_token(state, pattern.id, *content, special);
    if (is_normalized) {
      if (state.normalize_nfc) pattern.content = normalize_nfc(pattern.content);
      normalized.push_back(std::move(pattern));
    } else {
      raw.push_back(std::move(pattern));
    }
  }
  state.raw_added_tokens = AddedTokenMatcher(std::move(raw));
  state.normalized_added_tokens = AddedTokenMatcher(std::move(normalized));
  return Status::ok();
}

Result<Json> parse_document(std::string_view text) {
  try {
    Json root = Json::parse(text.begin(), text.end());
    if (!root.is_object()) return data_loss("tokenizer.json must hold a JSON object");
    return root;
  } catch (const Json::exception& error) {
    return data_loss(std::string("tokenizer.json is not valid JSON: ") + error.what());
  }
}

Result<std::shared_ptr<TokenizerState>> build_state(const Json& root) {
  RECGPT_RETURN_IF_ERROR(check_absent_or_null(root, "truncation"));
  RECGPT_RETURN_IF_ERROR(check_absent_or_null(root, "padding"));
  const Json* model = member(root, "model");
  if (model == nullptr) return data_loss("tokenizer.json has no \"model\"");
  RECGPT_ASSIGN_OR_RETURN(BpeModelSpec spec, parse_model(*model));

  auto state = std::make_shared<TokenizerState>();
  RECGPT_ASSIGN_OR_RETURN(state->normalize_nfc, parse_normalizer(member(root, "normalizer")));
  const Json* pre_tokenizer = member(root, "pre_tokenizer");
  int byte_level_steps = 0;
  if (pre_tokenizer != nullptr) {
    RECGPT_RETURN_IF_ERROR(
        parse_pre_tokenizer(*pre_tokenizer, "pre_tokenizer", 0, state->pre_tokenizer, byte_level_steps));
  }
  if (byte_level_steps == 0) {
    return unimplemented("pre_tokenizer has no ByteLevel step; only byte-level BPE tokenizers are supported");
  }
  RECGPT_RETURN_IF_ERROR(check_byte_level_component(member(root, "post_processor"), "post_processor", false));
  RECGPT_RETURN_IF_ERROR(check_byte_level_component(member(root, "decoder"), "decoder", true));

  RECGPT_ASSIGN_OR_RETURN(state->bpe, BpeModel::create(spec));
  state->id_of_token.reserve(spec.vocab.size());
  for (auto& [text, id] : spec.vocab) add_token(*state, id, std::move(text), false);
  RECGPT_RETURN_IF_ERROR(parse_added_tokens(member(root, "added_tokens"), *state));
  return state;
}

}  // namespace

Result<Tokenizer> Tokenizer::from_json(std::string_view json) {
  RECGPT_ASSIGN_OR_RETURN(Json root, parse_document(json));
  try {
    RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<TokenizerState> state, build_state(root));
    return Tokenizer(std::move(state));
  } catch (const Json::exception& error) {
    return data_loss(std::string("tokenizer.json has an unexpected shape: ") + error.what());
  }
}

Result<Tokenizer> Tokenizer::load(const std::string& path) {
  RECGPT_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  Result<Tokenizer> tokenizer = from_json(text);
  if (!tokenizer.is_ok()) return tokenizer.status().with_context(path);
  return tokenizer;
}

}  // namespace recgpt
