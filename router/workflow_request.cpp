#include "router/workflow_request.h"

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "engine/entity_store.h"
#include "engine/tokenizer.h"
#include "router/workflow_definition.h"

namespace recgpt::router {
namespace {

using nlohmann::json;

// A scalar as text (strings as they are, numbers and booleans as JSON writes them); nullopt otherwise.
std::optional<std::string> scalar_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number() || value.is_boolean()) return value.dump();
  return std::nullopt;
}

class Parser {
 public:
  Parser(const WorkflowLimits& limits, WorkflowRequest& request) : limits_(limits), request_(request) {}

  std::optional<ApiError> parse(const json& body) {
    if (!body.is_object()) return invalid_request("the body must be a JSON object");
    for (auto it = body.begin(); it != body.end(); ++it) {
      const std::string& key = it.key();
      const json& value = it.value();
      std::optional<ApiError> error;
      if (key == "user") {
        error = user(value);
      } else if (key == "history") {
        error = history(value);
      } else if (key == "queries") {
        error = queries(value);
      } else if (key == "environment") {
        error = pairs(value, "environment", request_.environment);
      } else if (key == "item") {
        error = item_text(value, "item", request_.item);
      } else if (key == "candidate") {
        error = item_text(value, "candidate", request_.candidate);
      } else if (key == "options") {
        error = options(value);
      } else {
        error = invalid_request("'" + key + "' is not a field of a workflow request", key);
      }
      if (error) return error;
    }
    return std::nullopt;
  }

 private:
  std::optional<ApiError> text(const json& value, const std::string& param, std::string& out) {
    std::optional<std::string> scalar = scalar_text(value);
    if (!scalar) return invalid_request("'" + param + "' must be a string", param);
    if (scalar->size() > limits_.max_field_bytes) {
      return invalid_request("'" + param + "' is longer than " + std::to_string(limits_.max_field_bytes) + " bytes",
                             param);
    }
    // Text from the request never becomes a special token ("<|im_end|>", the entity token): break the marker.
    for (size_t at = 0; (at = scalar->find("<|", at)) != std::string::npos;) scalar->replace(at, 2, "< |");
    out = std::move(*scalar);
    return std::nullopt;
  }

  std::optional<ApiError> pairs(const json& value, const std::string& param,
                                std::vector<std::pair<std::string, std::string>>& out) {
    if (!value.is_object()) return invalid_request("'" + param + "' must be an object", param);
    for (auto it = value.begin(); it != value.end(); ++it) {
      std::string item;
      if (it.value().is_array()) {  // e.g. "events": ["Double 11", "rain"]
        for (size_t i = 0; i < it.value().size(); ++i) {
          std::string part;
          if (auto error = text(it.value()[i], param + "." + it.key() + "[" + std::to_string(i) + "]", part))
            return error;
          item += (i > 0 ? ", " : "") + part;
        }
      } else if (auto error = text(it.value(), param + "." + it.key(), item)) {
        return error;
      }
      out.emplace_back(it.key(), std::move(item));
    }
    return std::nullopt;
  }

  std::optional<ApiError> user(const json& value) {
    if (!value.is_object()) return invalid_request("'user' must be an object", "user");
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (it.key() == "id") {
        if (auto error = text(it.value(), "user.id", request_.user_id)) return error;
      } else if (it.key() == "profile") {
        if (auto error = pairs(it.value(), "user.profile", request_.profile)) return error;
      } else {
        return invalid_request("'user." + it.key() + "' is not a field of a user", "user." + it.key());
      }
    }
    return std::nullopt;
  }

  std::optional<ApiError> history(const json& value) {
    if (!value.is_array()) return invalid_request("'history' must be an array", "history");
    if (value.size() > limits_.max_behaviours) {
      return invalid_request("'history' has more than " + std::to_string(limits_.max_behaviours) + " items", "history");
    }
    for (size_t i = 0; i < value.size(); ++i) {
      const std::string param = "history[" + std::to_string(i) + "]";
      const json& entry = value[i];
      if (!entry.is_object()) return invalid_request("'" + param + "' must be an object", param);
      BehaviourItem item;
      for (auto it = entry.begin(); it != entry.end(); ++it) {
        const std::string field = param + "." + it.key();
        std::optional<ApiError> error;
        if (it.key() == "item_id") {
          error = text(it.value(), field, item.item_id);
        } else if (it.key() == "title") {
          error = text(it.value(), field, item.title);
        } else if (it.key() == "category") {
          error = text(it.value(), field, item.category);
        } else if (it.key() == "action") {
          error = text(it.value(), field, item.action);
        } else if (it.key() == "timestamp") {
          error = text(it.value(), field, item.timestamp);
        } else if (it.key() == "vector") {
          error = vector(it.value(), field, item.vector);
        } else {
          error = invalid_request("'" + field + "' is not a field of a history item", field);
        }
        if (error) return error;
      }
      if (item.title.empty()) return invalid_request("'" + param + ".title' is missing", param + ".title");
      request_.behaviours.push_back(std::move(item));
    }
    return std::nullopt;
  }

  std::optional<ApiError> vector(const json& value, const std::string& param, std::vector<float>& out) {
    if (limits_.entity_dim == 0) return invalid_request("this model takes no entity vectors", param);
    if (!value.is_array() || value.size() != limits_.entity_dim) {
      return invalid_request("'" + param + "' must be an array of " + std::to_string(limits_.entity_dim) + " numbers",
                             param);
    }
    for (const json& number : value) {
      if (!number.is_number()) return invalid_request("'" + param + "' must hold numbers", param);
      out.push_back(number.get<float>());
    }
    return std::nullopt;
  }

  std::optional<ApiError> queries(const json& value) {
    if (!value.is_array()) return invalid_request("'queries' must be an array of strings", "queries");
    if (value.size() > limits_.max_queries) {
      return invalid_request("'queries' has more than " + std::to_string(limits_.max_queries) + " items", "queries");
    }
    for (size_t i = 0; i < value.size(); ++i) {
      std::string query;
      if (auto error = text(value[i], "queries[" + std::to_string(i) + "]", query)) return error;
      request_.queries.push_back(std::move(query));
    }
    return std::nullopt;
  }

  std::optional<ApiError> item_text(const json& value, const std::string& param, std::string& out) {
    if (!value.is_object()) return text(value, param, out);
    std::vector<std::pair<std::string, std::string>> fields;
    if (auto error = pairs(value, param, fields)) return error;
    for (const auto& [key, field] : fields) out += (out.empty() ? "" : "; ") + key + ": " + field;
    return std::nullopt;
  }

  std::optional<ApiError> options(const json& value) {
    if (!value.is_object()) return invalid_request("'options' must be an object", "options");
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string param = "options." + it.key();
      const json& option = it.value();
      bool known = false;
      for (const WorkflowOptionLimit& limit : kWorkflowOptions) {
        if (it.key() != limit.name) continue;
        known = true;
        if (!option.is_number_integer() || option.get<int64_t>() < 1 || option.get<int64_t>() > limit.max_value) {
          return invalid_request("'" + param + "' must be an integer from 1 to " + std::to_string(limit.max_value),
                                 param);
        }
        request_.options[limit.name] = static_cast<int32_t>(option.get<int64_t>());
      }
      if (known) continue;
      if (it.key() == "seed" && option.is_number_unsigned()) {
        request_.seed = option.get<uint64_t>();
      } else if (it.key() == "timeout" && option.is_number() && option.get<double>() > 0 &&
                 option.get<double>() <= 3600) {
        request_.timeout_seconds = option.get<double>();
      } else if (it.key() == "stream" && option.is_boolean()) {
        request_.stream = option.get<bool>();
      } else if (it.key() == "v1" && option.is_boolean()) {
        request_.v1 = option.get<bool>();
      } else if (it.key() == "affinity" && option.is_boolean()) {
        request_.affinity = option.get<bool>();
      } else if (it.key() == "seed" || it.key() == "timeout" || it.key() == "stream" || it.key() == "v1" ||
                 it.key() == "affinity") {
        return invalid_request("'" + param +
                                   "' has the wrong type or value (seed: a non-negative integer, timeout: "
                                   "seconds in (0, 3600], stream, v1 and affinity: booleans)",
                               param);
      } else {
        return invalid_request("'" + param + "' is not a workflow option", param);
      }
    }
    return std::nullopt;
  }

  const WorkflowLimits& limits_;
  WorkflowRequest& request_;
};

std::string join_pairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::string text;
  for (const auto& [key, value] : pairs) text += (text.empty() ? "" : "; ") + key + "=" + value;
  return text;
}

}  // namespace

std::variant<WorkflowRequest, ApiError> parse_workflow_request(std::string_view body, const WorkflowLimits& limits) {
  if (json_text_depth(body, limits.max_body_nesting) > limits.max_body_nesting) {
    return invalid_request("the body nests deeper than " + std::to_string(limits.max_body_nesting) + " levels");
  }
  const json document = json::parse(body, nullptr, false);
  if (document.is_discarded()) return invalid_request("the body is not valid JSON");
  WorkflowRequest request;
  for (const WorkflowOptionLimit& option : kWorkflowOptions) request.options[option.name] = option.default_value;
  Parser parser(limits, request);
  if (std::optional<ApiError> error = parser.parse(document)) return *error;
  if (request.behaviours.empty() && request.queries.empty() && request.profile.empty()) {
    return invalid_request("the user context is empty: give 'history', 'queries' or 'user.profile'", "history");
  }
  return request;
}

HybridContext build_context(const WorkflowRequest& request, const Tokenizer& tokenizer, const EntityStore* store,
                            const std::string& entity_token, bool hybrid) {
  HybridContext context;
  std::string head = "User: " + (request.user_id.empty() ? std::string("anonymous") : request.user_id) + "\n";
  if (!request.profile.empty()) head += "Profile: " + join_pairs(request.profile) + "\n";
  // Items as entities: the request's vector, else the store's id; the rest as titles.
  std::vector<int> as_entity(request.behaviours.size(), 0);  // 1: by vector, 2: by id
  bool any_vector = false;
  for (size_t i = 0; i < request.behaviours.size() && hybrid && !entity_token.empty(); ++i) {
    const BehaviourItem& item = request.behaviours[i];
    if (!item.vector.empty()) {
      as_entity[i] = 1;
      any_vector = true;
    } else if (store != nullptr && !item.item_id.empty() && store->find(item.item_id)) {
      as_entity[i] = 2;
    }
  }
  std::string hybrid_text = head;
  std::string text_only = head;
  if (!request.behaviours.empty()) {
    hybrid_text += "History:\n";
    text_only += "History:\n";
  }
  for (size_t i = 0; i < request.behaviours.size(); ++i) {
    const BehaviourItem& item = request.behaviours[i];
    std::string line_head = "- " + (item.action.empty() ? std::string("viewed") : item.action);
    if (!item.category.empty()) line_head += " [" + item.category + "]";
    line_head += " ";
    const std::string line_tail = item.timestamp.empty() ? "\n" : " (" + item.timestamp + ")\n";
    text_only += line_head + item.title + line_tail;
    if (as_entity[i] == 0) {
      hybrid_text += line_head + item.title + line_tail;
      continue;
    }
    hybrid_text += line_head + entity_token + line_tail;
    ++context.entities;
    if (any_vector) {  // one form for all: vectors (ids resolved from the store here)
      const std::span<const float> vector =
          as_entity[i] == 1 ? std::span<const float>(item.vector) : *store->find(item.item_id);
      context.entity_vectors.insert(context.entity_vectors.end(), vector.begin(), vector.end());
    } else {
      context.entity_ids.push_back(item.item_id);
    }
  }
  std::string tail;
  if (!request.queries.empty()) {
    tail += "Queries:";
    for (const std::string& query : request.queries) tail += " " + query + ";";
    tail += "\n";
  }
  if (!request.environment.empty()) tail += "Situation: " + join_pairs(request.environment) + "\n";
  context.text = hybrid_text + tail;
  context.hybrid_tokens = static_cast<int64_t>(tokenizer.encode(context.text).size());
  context.text_tokens = static_cast<int64_t>(tokenizer.encode(text_only + tail).size());
  return context;
}

}  // namespace recgpt::router
