// The decoding constraints a node applies (proto Constraint -> engine/choice_list_processor.h,
// lines_processor.h, json_processor.h): catalogues loaded once at start (`--catalogue name=path`, each compiled
// to a ChoiceTrie), choices given with a call compiled per call, JSON schemas compiled on first use and kept (the
// most recent kCachedSchemas: a workflow sends the same schema with every call), their token masks in one cache
// of JsonMaskCache::kDefaultCapacity masks (19 MB for Qwen3's vocabulary). Prefill and decode nodes hold one each.
#pragma once

#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/choice_trie.h"
#include "engine/json_processor.h"
#include "engine/lines_processor.h"
#include "engine/logits_processor.h"
#include "engine/tokenizer.h"
#include "proto/control.pb.h"

namespace recgpt {
class ModelFiles;
}

namespace recgpt::node {

// Makes a call's constraint for a sequence whose generation begins after `prompt_tokens` tokens of its prompt.
using ConstraintMaker = std::function<std::shared_ptr<LogitsProcessor>(size_t prompt_tokens)>;

class Constraints {
 public:
  static constexpr size_t kMaxChoicesPerCall = 4096;
  static constexpr uint32_t kMaxLineTokens = 1024;
  // A catalogue path naming the tag catalogue this binary carries (data/tag_catalogue.txt of its source).
  static constexpr const char* kBuiltinCatalogue = "builtin";
  static constexpr size_t kCachedSchemas = 64;
  static constexpr size_t kMaxSchemaBytes = 64 * 1024;

  // Loads the model's tokenizer and every catalogue (a path, or "builtin"). Errors name the catalogue, its file
  // and line.
  static Result<std::unique_ptr<Constraints>> create(
      const ModelFiles& model, const std::vector<std::pair<std::string, std::string>>& catalogues);

  // The maker for `sampling`'s constraint; an empty maker when it has none. kInvalidArgument for a bad one (no
  // stop token to end it, max_items 0, bad or too many choices, a bad line shape, a schema that does not
  // compile), kFailedPrecondition for a catalogue this node lacks. Thread-safe.
  Result<ConstraintMaker> maker(const control::SamplingParams& sampling) const;

  const std::map<std::string, std::shared_ptr<const ChoiceTrie>>& catalogues() const { return catalogues_; }
  // The JSON masks' cache: lookups that found a mask, and that had to compute one (the metrics follow them).
  JsonMaskCache::Stats json_mask_stats() const { return json_masks_->stats(); }

 private:
  explicit Constraints(Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}
  Result<ConstraintMaker> json_maker(const control::SamplingParams& sampling) const;
  // The grammar of `schema_text` (empty: any object), compiled or found in the cache.
  Result<std::shared_ptr<const JsonGrammar>> json_grammar(const std::string& schema_text) const;

  Tokenizer tokenizer_;
  int32_t separator_ = -1;  // the line break token
  std::shared_ptr<const LineTokens> line_tokens_;
  std::map<std::string, std::shared_ptr<const ChoiceTrie>> catalogues_;
  std::shared_ptr<const JsonVocabulary> json_vocabulary_;
  std::shared_ptr<JsonMaskCache> json_masks_;
  std::shared_ptr<const JsonGrammar> any_object_;
  mutable std::mutex schemas_mutex_;
  mutable std::list<std::pair<std::string, std::shared_ptr<const JsonGrammar>>> schemas_;  // most recent first
};

}  // namespace recgpt::node
