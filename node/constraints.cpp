#include "node/constraints.h"

#include "engine/choice_list_processor.h"
#include "engine/model_files.h"

namespace recgpt {
std::string_view builtin_tag_catalogue();  // generated: cmake/EmbedText.cmake (data/tag_catalogue.txt)
}  // namespace recgpt

namespace recgpt::node {

Result<std::unique_ptr<Constraints>> Constraints::create(
    const ModelFiles& model, const std::vector<std::pair<std::string, std::string>>& catalogues) {
  RECGPT_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::load(model.tokenizer_path()));
  auto constraints = std::unique_ptr<Constraints>(new Constraints(std::move(tokenizer)));
  const std::vector<int32_t> line_break = constraints->tokenizer_.encode("\n");
  if (line_break.size() == 1) constraints->separator_ = line_break[0];
  constraints->line_tokens_ = std::make_shared<LineTokens>(constraints->tokenizer_);
  constraints->json_vocabulary_ = JsonVocabulary::from_tokenizer(constraints->tokenizer_);
  constraints->json_masks_ = std::make_shared<JsonMaskCache>();
  constraints->any_object_ = std::make_shared<const JsonGrammar>(
      JsonSchema::any_object(), constraints->json_vocabulary_, constraints->json_masks_);
  for (const auto& [name, path] : catalogues) {
    if (constraints->separator_ < 0) {
      return invalid_argument("catalogue '" + name + "': the tokenizer writes a line break as several tokens");
    }
    if (constraints->catalogues_.count(name) > 0) return invalid_argument("catalogue '" + name + "' given twice");
    auto trie = path == kBuiltinCatalogue
                    ? ChoiceTrie::parse(constraints->tokenizer_, builtin_tag_catalogue(), "the built-in catalogue")
                    : ChoiceTrie::load(constraints->tokenizer_, path);
    if (!trie.is_ok()) return trie.status().with_context("catalogue '" + name + "'");
    constraints->catalogues_.emplace(name, std::move(trie).value());
  }
  return constraints;
}

Result<ConstraintMaker> Constraints::maker(const control::SamplingParams& sampling) const {
  if (!sampling.has_constraint()) return ConstraintMaker();
  const control::Constraint& constraint = sampling.constraint();
  if (sampling.stop_token_ids_size() == 0) {
    return invalid_argument("a constrained call needs a stop token to end its output");
  }
  if (constraint.json() || !constraint.json_schema().empty()) return json_maker(sampling);
  if (separator_ < 0) return unimplemented("this model's tokenizer writes a line break as several tokens");
  if (constraint.max_items() == 0) return invalid_argument("a constraint's max_items must be at least 1");
  if (constraint.lines()) {
    if (constraint.choices_size() > 0 || !constraint.catalogue().empty()) {
      return invalid_argument("a lines constraint takes no choices or catalogue");
    }
    if (constraint.max_line_tokens() == 0 || constraint.max_line_tokens() > kMaxLineTokens) {
      return invalid_argument("a lines constraint's max_line_tokens must be 1 to " + std::to_string(kMaxLineTokens));
    }
    if (constraint.line_prefix().find('\n') != std::string::npos) {
      return invalid_argument("a line prefix cannot hold a line break");
    }
    LinesShape shape{tokenizer_.encode(constraint.line_prefix()),
                     static_cast<int32_t>(std::min<uint32_t>(constraint.max_items(), 1u << 16)),
                     static_cast<int32_t>(constraint.max_line_tokens()), separator_,
                     static_cast<int32_t>(sampling.stop_token_ids(0))};
    for (int32_t token : shape.prefix) {
      if (tokenizer_.is_special(token)) return invalid_argument("a line prefix cannot hold a special token");
    }
    return ConstraintMaker(
        [line_tokens = line_tokens_, shape](size_t prompt_tokens) -> std::shared_ptr<LogitsProcessor> {
          return std::make_shared<LinesProcessor>(line_tokens, shape, prompt_tokens);
        });
  }
  std::shared_ptr<const ChoiceTrie> trie;
  if (!constraint.catalogue().empty()) {
    if (constraint.choices_size() > 0)
      return invalid_argument("a constraint names a catalogue or gives choices, not both");
    auto found = catalogues_.find(constraint.catalogue());
    if (found == catalogues_.end()) {
      // The node's configuration, not the caller's request: another node may hold it (the router retries there).
      return failed_precondition("catalogue '" + constraint.catalogue() + "' is not loaded on this node (--catalogue " +
                                 constraint.catalogue() + "=PATH)");
    }
    trie = found->second;
  } else {
    if (constraint.choices_size() == 0) return invalid_argument("a constraint without choices or a catalogue");
    if (static_cast<size_t>(constraint.choices_size()) > kMaxChoicesPerCall) {
      return invalid_argument("a constraint gives " + std::to_string(constraint.choices_size()) + " choices, at most " +
                              std::to_string(kMaxChoicesPerCall) + " are allowed per call");
    }
    const std::vector<std::string> choices(constraint.choices().begin(), constraint.choices().end());
    RECGPT_ASSIGN_OR_RETURN(trie, ChoiceTrie::build(tokenizer_, choices));
  }
  const ChoiceListShape shape{static_cast<int32_t>(std::min<uint32_t>(constraint.max_items(), 1u << 16)), separator_,
                              static_cast<int32_t>(sampling.stop_token_ids(0))};
  return ConstraintMaker([trie, shape](size_t prompt_tokens) -> std::shared_ptr<LogitsProcessor> {
    return std::make_shared<ChoiceListProcessor>(trie, shape, prompt_tokens);
  });
}

Result<ConstraintMaker> Constraints::json_maker(const control::SamplingParams& sampling) const {
  const control::Constraint& constraint = sampling.constraint();
  if (!constraint.json()) return invalid_argument("a constraint gives a JSON schema without asking for JSON");
  if (constraint.choices_size() > 0 || !constraint.catalogue().empty() || constraint.lines()) {
    return invalid_argument("a JSON constraint takes no choices, catalogue or lines");
  }
  RECGPT_ASSIGN_OR_RETURN(std::shared_ptr<const JsonGrammar> grammar, json_grammar(constraint.json_schema()));
  const auto end = static_cast<int32_t>(sampling.stop_token_ids(0));
  return ConstraintMaker([grammar, end](size_t prompt_tokens) -> std::shared_ptr<LogitsProcessor> {
    return std::make_shared<JsonProcessor>(grammar, end, prompt_tokens);
  });
}

Result<std::shared_ptr<const JsonGrammar>> Constraints::json_grammar(const std::string& schema_text) const {
  if (schema_text.empty()) return any_object_;
  if (schema_text.size() > kMaxSchemaBytes) {
    return invalid_argument("a JSON schema of " + std::to_string(schema_text.size()) + " bytes, at most " +
                            std::to_string(kMaxSchemaBytes) + " are allowed");
  }
  {
    std::lock_guard lock(schemas_mutex_);
    for (auto it = schemas_.begin(); it != schemas_.end(); ++it) {
      if (it->first == schema_text) {
        schemas_.splice(schemas_.begin(), schemas_, it);
        return schemas_.front().second;
      }
    }
  }
  auto schema = JsonSchema::compile(schema_text);
  if (!schema.is_ok()) return invalid_argument("the JSON schema: " + schema.status().message());
  auto grammar = std::make_shared<const JsonGrammar>(std::move(schema).value(), json_vocabulary_, json_masks_);
  std::lock_guard lock(schemas_mutex_);
  schemas_.emplace_front(schema_text, grammar);
  if (schemas_.size() > kCachedSchemas) schemas_.pop_back();
  return grammar;
}

}  // namespace recgpt::node
