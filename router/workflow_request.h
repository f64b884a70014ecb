// The body of POST /v1/workflows/{name} (docs/api.md): a user's profile, behaviour history, queries and
// situation, the item or candidate some workflows take, and options; and the hybrid user context built from it.
//
// The context is text in which each behaviour item the entity store knows (or whose vector the request carries)
// is one entity token instead of its title: the user context every agent of the workflow reads first, so they all
// share its KV. Its lengths are reported next to the text-only context's (every item as its title).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "router/openai_api.h"

namespace recgpt {
class EntityStore;
class Tokenizer;
}  // namespace recgpt

namespace recgpt::router {

struct BehaviourItem {
  std::string item_id;
  std::string title;
  std::string category;
  std::string action;  // e.g. click, cart, buy
  std::string timestamp;
  std::vector<float> vector;  // optional: the item's entity vector
};

struct WorkflowRequest {
  std::string user_id;
  std::vector<std::pair<std::string, std::string>> profile;  // by key
  std::vector<BehaviourItem> behaviours;
  std::vector<std::string> queries;
  std::vector<std::pair<std::string, std::string>> environment;  // time, weather, season, events, ... by key
  std::string item;                        // `explain`: the item to explain (title and attributes, as text)
  std::string candidate;                   // `judge`: the recommendation to judge
  std::map<std::string, int32_t> options;  // experts, tags_per_expert, final_tags (defaults filled in)
  std::optional<uint64_t> seed;
  std::optional<double> timeout_seconds;
  bool stream = false;
  bool v1 = false;       // the V1-style baseline: isolated agents, each with the whole text context, no sharing
  bool affinity = true;  // all calls prefer the first call's node pair (off: each call placed on its own)
};

struct WorkflowLimits {
  size_t max_behaviours = 2000;
  size_t max_queries = 100;
  size_t max_field_bytes = 4096;
  size_t entity_dim = 0;          // the model's adaptor input size; 0: no adaptor (no entity tokens)
  size_t max_body_nesting = 128;  // arrays and objects in the body (common/json_depth.h)
};

std::variant<WorkflowRequest, ApiError> parse_workflow_request(std::string_view body, const WorkflowLimits& limits);

struct HybridContext {
  std::string text;                     // with the entity token in place of known items
  std::vector<std::string> entity_ids;  // one per entity token, when every entity is by id
  std::vector<float> entity_vectors;    // [entities, dim], when any came as a vector (ids resolved here)
  int64_t hybrid_tokens = 0;            // tokens of `text`
  int64_t text_tokens = 0;              // tokens of the same context with every item as its title
  int64_t entities = 0;
};

// `store` may be null (every item as text unless the request gives its vector); `entity_token` is the model's
// entity token text ("<|entity|>"), empty when the model has no adaptor.
HybridContext build_context(const WorkflowRequest& request, const Tokenizer& tokenizer, const EntityStore* store,
                            const std::string& entity_token, bool hybrid);

}  // namespace recgpt::router
