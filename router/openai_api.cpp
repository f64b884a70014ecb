#include "router/openai_api.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "engine/json_schema.h"
#include "engine/utf8.h"

namespace recgpt::router {
namespace {

// ordered_json keeps an object's keys in the body's order: a json_schema's keys are written in its order.
using json = nlohmann::ordered_json;

std::string describe(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

// Whether an integer JSON value lies in [low, high] (into `out`); JSON parses non-negative integers as unsigned.
bool integer_in(const json& value, int64_t low, int64_t high, int64_t& out) {
  if (value.is_number_unsigned()) {
    const uint64_t number = value.get<uint64_t>();
    if (number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    out = static_cast<int64_t>(number);
  } else {
    out = value.get<int64_t>();
  }
  return out >= low && out <= high;
}

ApiError wrong_type(const std::string& field, const std::string& expected, const json& value) {
  return invalid_request("'" + field + "' must be " + expected + ", not " + describe(value), field);
}

// A field reader over one object: each getter leaves the default when the field is absent or null, and
// records the first error.
class Fields {
 public:
  explicit Fields(const json& object) : object_(object) {}

  const json* find(const std::string& name) const {
    auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  void number(const std::string& name, float& out, double low, double high) {
    const json* value = find(name);
    if (value == nullptr || error_) return;
    if (!value->is_number()) return fail(wrong_type(name, "a number", *value));
    const double number = value->get<double>();
    if (!(number >= low && number <= high)) {
      return fail(invalid_request(
          "'" + name + "' must be between " + trim(low) + " and " + trim(high) + ", not " + value->dump(), name));
    }
    out = static_cast<float>(number);
  }

  template <typename Int>
  void integer(const std::string& name, Int& out, int64_t low, int64_t high) {
    const json* value = find(name);
    if (value == nullptr || error_) return;
    if (!value->is_number_integer()) return fail(wrong_type(name, "an integer", *value));
    int64_t number = 0;
    if (!integer_in(*value, low, high, number)) {
      return fail(invalid_request("'" + name + "' must be an integer from " + std::to_string(low) + " to " +
                                      std::to_string(high) + ", not " + value->dump(),
                                  name));
    }
    out = static_cast<Int>(number);
  }

  void boolean(const std::string& name, bool& out) {
    const json* value = find(name);
    if (value == nullptr || error_) return;
    if (!value->is_boolean()) return fail(wrong_type(name, "a boolean", *value));
    out = value->get<bool>();
  }

  void string(const std::string& name, std::string& out) {
    const json* value = find(name);
    if (value == nullptr || error_) return;
    if (!value->is_string()) return fail(wrong_type(name, "a string", *value));
    out = value->get<std::string>();
  }

  void fail(ApiError error) {
    if (!error_) error_ = std::move(error);
  }
  const std::optional<ApiError>& error() const { return error_; }

 private:
  static std::string trim(double value) {
    std::string text = std::to_string(value);
    text.erase(text.find_last_not_of('0') + 1);
    if (!text.empty() && text.back() == '.') text.pop_back();
    return text;
  }

  const json& object_;
  std::optional<ApiError> error_;
};

// Appends the token ids of a JSON array to `out`; the index of the first item that is not one (an integer in
// [0, INT32_MAX]), if any. The vocabulary is checked when the prompt is tokenized.
std::optional<size_t> read_token_ids(const json& array, std::vector<int32_t>& out) {
  for (size_t i = 0; i < array.size(); ++i) {
    int64_t id = 0;
    if (!array[i].is_number_integer() || !integer_in(array[i], 0, INT32_MAX, id)) return i;
    out.push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

void parse_prompt(const json& prompt, CompletionRequest& request, Fields& fields) {
  if (prompt.is_string()) {
    request.prompt = prompt.get<std::string>();
    return;
  }
  if (!prompt.is_array()) return fields.fail(wrong_type("prompt", "a string or an array", prompt));
  if (prompt.empty()) return fields.fail(invalid_request("'prompt' is empty", "prompt"));
  if (prompt.size() == 1 && prompt[0].is_string()) {
    request.prompt = prompt[0].get<std::string>();
    return;
  }
  if (prompt[0].is_string() || prompt[0].is_array()) {
    return fields.fail(invalid_request("only one prompt per request is supported", "prompt"));
  }
  if (auto bad = read_token_ids(prompt, request.prompt_token_ids)) {
    return fields.fail(invalid_request("'prompt[" + std::to_string(*bad) + "]' must be a token id", "prompt"));
  }
}

void parse_messages(const json& messages, CompletionRequest& request, Fields& fields) {
  if (!messages.is_array()) return fields.fail(wrong_type("messages", "an array", messages));
  if (messages.empty()) return fields.fail(invalid_request("'messages' is empty", "messages"));
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string at = "messages[" + std::to_string(i) + "]";
    const json& message = messages[i];
    if (!message.is_object()) return fields.fail(wrong_type(at, "an object", message));
    auto role = message.find("role");
    if (role == message.end()) return fields.fail(invalid_request("'" + at + ".role' is missing", at + ".role"));
    if (!role->is_string()) return fields.fail(wrong_type(at + ".role", "a string", *role));
    const std::string name = role->get<std::string>();
    if (name != "system" && name != "user" && name != "assistant" && name != "developer") {
      return fields.fail(invalid_request(
          "'" + at + ".role' must be system, developer, user or assistant, not '" + name + "'", at + ".role"));
    }
    auto content = message.find("content");
    if (content == message.end() || content->is_null()) {
      return fields.fail(invalid_request("'" + at + ".content' is missing", at + ".content"));
    }
    std::string text;
    if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {  // content parts: text only
      for (size_t p = 0; p < content->size(); ++p) {
        const json& part = (*content)[p];
        const std::string part_at = at + ".content[" + std::to_string(p) + "]";
        if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return fields.fail(
              invalid_request("'" + part_at + "' must be a text part {\"type\": \"text\", \"text\": ...}", part_at));
        }
        text += part["text"].get<std::string>();
      }
    } else {
      return fields.fail(wrong_type(at + ".content", "a string or an array of text parts", *content));
    }
    request.messages.push_back({name == "developer" ? "system" : name, std::move(text)});
  }
}

void parse_stop(const json& stop, CompletionRequest& request, Fields& fields, const ApiLimits& limits) {
  if (stop.is_string()) {
    if (!stop.get<std::string>().empty()) request.stop.push_back(stop.get<std::string>());
    return;
  }
  if (!stop.is_array()) return fields.fail(wrong_type("stop", "a string or an array of strings", stop));
  if (stop.size() > limits.max_stop_strings) {
    return fields.fail(
        invalid_request("'stop' has more than " + std::to_string(limits.max_stop_strings) + " strings", "stop"));
  }
  for (const json& item : stop) {
    if (!item.is_string()) return fields.fail(wrong_type("stop", "a string or an array of strings", item));
    if (!item.get<std::string>().empty()) request.stop.push_back(item.get<std::string>());
  }
}

// vLLM's `stop_token_ids`.
void parse_stop_token_ids(const json& ids, CompletionRequest& request, Fields& fields, const ApiLimits& limits) {
  if (!ids.is_array()) return fields.fail(wrong_type("stop_token_ids", "an array of token ids", ids));
  if (ids.size() > limits.max_stop_token_ids) {
    return fields.fail(invalid_request(
        "'stop_token_ids' has more than " + std::to_string(limits.max_stop_token_ids) + " ids", "stop_token_ids"));
  }
  if (auto bad = read_token_ids(ids, request.stop_token_ids)) {
    return fields.fail(wrong_type("stop_token_ids", "an array of token ids (integers >= 0)", ids[*bad]));
  }
}

// The `allowed` extension: the strings the output may list, one per line (see CompletionRequest).
void parse_allowed(const json& allowed, CompletionRequest& request, Fields& fields, const ApiLimits& limits) {
  if (!allowed.is_array()) return fields.fail(wrong_type("allowed", "an array of strings", allowed));
  if (allowed.empty()) return fields.fail(invalid_request("'allowed' is empty", "allowed"));
  if (allowed.size() > limits.max_allowed) {
    return fields.fail(
        invalid_request("'allowed' has more than " + std::to_string(limits.max_allowed) + " strings", "allowed"));
  }
  for (size_t i = 0; i < allowed.size(); ++i) {
    const json& item = allowed[i];
    const std::string param = "allowed[" + std::to_string(i) + "]";
    if (!item.is_string()) return fields.fail(wrong_type(param, "a string", item));
    const std::string& text = item.get_ref<const std::string&>();
    if (text.empty() || text.size() > limits.max_allowed_bytes || text.find('\n') != std::string::npos) {
      return fields.fail(invalid_request(
          "'" + param + "' must be 1 to " + std::to_string(limits.max_allowed_bytes) + " bytes without a line break",
          param));
    }
    request.allowed.push_back(text);
  }
}

void parse_entities(const json& entities, CompletionRequest& request, Fields& fields, const ApiLimits& limits) {
  if (!entities.is_array()) return fields.fail(wrong_type("entities", "an array", entities));
  if (entities.size() > limits.max_entities) {
    return fields.fail(
        invalid_request("'entities' has more than " + std::to_string(limits.max_entities) + " items", "entities"));
  }
  for (size_t i = 0; i < entities.size(); ++i) {
    const std::string at = "entities[" + std::to_string(i) + "]";
    const json& entity = entities[i];
    EntityInput input;
    if (entity.is_string()) {
      input.id = entity.get<std::string>();
      if (input.id.empty()) return fields.fail(invalid_request("'" + at + "' is an empty entity id", at));
    } else if (entity.is_array()) {
      if (limits.entity_dim == 0) return fields.fail(invalid_request("the model has no entity adaptor", at));
      if (entity.size() != limits.entity_dim) {
        return fields.fail(invalid_request("'" + at + "' has " + std::to_string(entity.size()) +
                                               " values; the model's entity adaptor takes " +
                                               std::to_string(limits.entity_dim),
                                           at));
      }
      for (const json& value : entity) {
        if (!value.is_number() || !std::isfinite(value.get<double>())) {
          return fields.fail(invalid_request("'" + at + "' must hold finite numbers", at));
        }
        input.vector.push_back(value.get<float>());
      }
    } else {
      return fields.fail(wrong_type(at, "an entity id (string) or a vector (array of numbers)", entity));
    }
    request.entities.push_back(std::move(input));
  }
}

ApiError unsupported(const std::string& field, const std::string& why) {
  return invalid_request("'" + field + "' is not supported by this server: " + why, field, "unsupported_parameter");
}

// OpenAI's structured output: {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema":
// {"name", "schema", "strict", "description"}}. The schema is compiled here so a request the nodes would refuse
// is refused by name now.
void parse_response_format(const json& format, CompletionRequest& request, Fields& fields) {
  const json* type = format.is_object() && format.contains("type") ? &format["type"] : nullptr;
  if (type == nullptr || !type->is_string()) {
    return fields.fail(invalid_request("'response_format' must be an object with a string 'type'", "response_format"));
  }
  const std::string kind = type->get<std::string>();
  if (kind == "text") return;
  if (kind == "json_object") {
    request.response_format = ResponseFormat::kJsonObject;
    return;
  }
  if (kind != "json_schema") {
    return fields.fail(invalid_request(
        "'response_format.type' must be text, json_object or json_schema, not '" + kind + "'", "response_format.type"));
  }
  const json* spec = format.contains("json_schema") ? &format["json_schema"] : nullptr;
  if (spec == nullptr || !spec->is_object()) {
    return fields.fail(invalid_request("'response_format.json_schema' must be an object with 'name' and 'schema'",
                                       "response_format.json_schema"));
  }
  const json* name = spec->contains("name") ? &(*spec)["name"] : nullptr;
  const auto name_ok = [](const std::string& text) {
    return !text.empty() && text.size() <= 64 && std::all_of(text.begin(), text.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
    });
  };
  if (name == nullptr || !name->is_string() || !name_ok(name->get<std::string>())) {
    return fields.fail(invalid_request("'response_format.json_schema.name' must be 1 to 64 letters, digits, '_' or '-'",
                                       "response_format.json_schema.name"));
  }
  if (spec->contains("strict") && !(*spec)["strict"].is_boolean() && !(*spec)["strict"].is_null()) {
    return fields.fail(invalid_request("'response_format.json_schema.strict' must be a boolean",
                                       "response_format.json_schema.strict"));
  }
  const json* schema = spec->contains("schema") ? &(*spec)["schema"] : nullptr;
  if (schema == nullptr || !(schema->is_object() || schema->is_boolean())) {
    return fields.fail(invalid_request("'response_format.json_schema.schema' must be a JSON Schema object",
                                       "response_format.json_schema.schema"));
  }
  // dump() recurses, on a body whose depth check_body_shape() bounded; compile() bounds the schema's own.
  request.json_schema = schema->dump();
  if (auto compiled = JsonSchema::compile(request.json_schema); !compiled.is_ok()) {
    return fields.fail(invalid_request("'response_format.json_schema.schema': " + compiled.status().message(),
                                       "response_format.json_schema.schema", "unsupported_schema"));
  }
  request.response_format = ResponseFormat::kJsonSchema;
}

void parse_logprobs(Fields& fields, CompletionRequest& request, Endpoint endpoint, const ApiLimits& limits) {
  if (endpoint == Endpoint::kCompletions) {
    // The legacy shape: `logprobs` is the number of most likely tokens listed at each position.
    request.logprobs = fields.find("logprobs") != nullptr;
    fields.integer("logprobs", request.top_logprobs, 0, limits.max_top_logprobs);
    return;
  }
  fields.boolean("logprobs", request.logprobs);
  fields.integer("top_logprobs", request.top_logprobs, 0, limits.max_top_logprobs);
  if (fields.find("top_logprobs") != nullptr && !request.logprobs) {
    fields.fail(invalid_request("'top_logprobs' needs 'logprobs': true", "top_logprobs"));
  }
}

// {"token id": bias}: ids as decimal strings (the vocabulary is checked when the prompt is tokenized).
void parse_logit_bias(const json& bias, CompletionRequest& request, Fields& fields, const ApiLimits& limits) {
  if (!bias.is_object()) return fields.fail(wrong_type("logit_bias", "an object", bias));
  if (bias.size() > limits.max_logit_bias_tokens) {
    return fields.fail(invalid_request("'logit_bias' lists " + std::to_string(bias.size()) + " tokens, at most " +
                                           std::to_string(limits.max_logit_bias_tokens),
                                       "logit_bias"));
  }
  for (const auto& [key, value] : bias.items()) {
    int32_t token = -1;
    const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), token);
    if (error != std::errc() || end != key.data() + key.size() || token < 0) {
      return fields.fail(invalid_request("'logit_bias' keys must be token ids, not '" + key + "'", "logit_bias"));
    }
    if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100)) {
      return fields.fail(
          invalid_request("'logit_bias' of token " + key + " must be a number from -100 to 100", "logit_bias"));
    }
    request.logit_bias.emplace_back(token, value.get<float>());
  }
}

// OpenAI fields this server does not implement: refused when they ask for something, accepted at their
// do-nothing values (SDKs send some of them by default).
void refuse_unsupported(Fields& fields, Endpoint endpoint) {
  if (endpoint == Endpoint::kCompletions) {
    bool echo = false;
    fields.boolean("echo", echo);
    if (echo) return fields.fail(unsupported("echo", "the prompt is not repeated in the answer"));
    std::string suffix;
    fields.string("suffix", suffix);
    if (!suffix.empty()) return fields.fail(unsupported("suffix", "no insertion mode"));
    int32_t best_of = 1;
    fields.integer("best_of", best_of, 1, 1);
    return;
  }
  for (const char* name : {"tools", "functions"}) {
    const json* list = fields.find(name);
    if (list == nullptr) continue;
    if (!list->is_array()) return fields.fail(wrong_type(name, "an array", *list));
    if (!list->empty()) return fields.fail(unsupported(name, "no tool calling"));
  }
}

json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

json head_json(Endpoint endpoint, const CompletionResult& head, const char* object) {
  return {{"id", head.id}, {"object", object}, {"created", head.created}, {"model", head.model}};
}

json nullable(std::string_view text) { return text.empty() ? json(nullptr) : json(std::string(text)); }

}  // namespace

std::optional<ApiError> check_body_shape(std::string_view body, const ApiLimits& limits) {
  const JsonTextShape shape = json_text_shape(body, limits.max_body_nesting, limits.max_object_members);
  if (shape.depth > limits.max_body_nesting) {
    return invalid_request("the body nests deeper than " + std::to_string(limits.max_body_nesting) + " levels");
  }
  if (shape.object_members > limits.max_object_members) {
    return invalid_request("the body has an object of more than " + std::to_string(limits.max_object_members) +
                           " members");
  }
  return std::nullopt;
}

ApiError invalid_request(std::string message, std::string param, std::string code) {
  ApiError error;
  error.message = std::move(message);
  error.param = std::move(param);
  error.code = std::move(code);
  return error;
}

std::string error_json(const ApiError& error) {
  json body = {{"error",
                {{"message", error.message},
                 {"type", error.type},
                 {"param", nullable(error.param)},
                 {"code", nullable(error.code)}}}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::variant<CompletionRequest, ApiError> parse_completion_request(std::string_view body, Endpoint endpoint,
                                                                   const ApiLimits& limits) {
  if (std::optional<ApiError> error = check_body_shape(body, limits)) return *error;
  const json document = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return invalid_request("the request body is not valid JSON", {}, "invalid_json");
  if (!document.is_object())
    return invalid_request("the request body must be a JSON object, not " + describe(document));
  CompletionRequest request;
  request.endpoint = endpoint;
  Fields fields(document);
  const json* model = fields.find("model");
  if (model == nullptr) return invalid_request("'model' is missing", "model");
  fields.string("model", request.model);
  if (endpoint == Endpoint::kCompletions) {
    const json* prompt = fields.find("prompt");
    if (prompt == nullptr) return invalid_request("'prompt' is missing", "prompt");
    parse_prompt(*prompt, request, fields);
  } else {
    const json* messages = fields.find("messages");
    if (messages == nullptr) return invalid_request("'messages' is missing", "messages");
    parse_messages(*messages, request, fields);
    request.max_tokens = limits.default_chat_max_tokens;
  }
  fields.integer("max_tokens", request.max_tokens, 1, limits.max_tokens_limit);
  if (endpoint == Endpoint::kChatCompletions)
    fields.integer("max_completion_tokens", request.max_tokens, 1, limits.max_tokens_limit);
  fields.integer("min_tokens", request.min_tokens, 0, limits.max_tokens_limit);
  if (request.min_tokens > request.max_tokens) {
    fields.fail(invalid_request("'min_tokens' (" + std::to_string(request.min_tokens) + ") is above 'max_tokens' (" +
                                    std::to_string(request.max_tokens) + ")",
                                "min_tokens"));
  }
  fields.number("temperature", request.temperature, 0, 2);
  fields.number("top_p", request.top_p, 0, 1);
  if (fields.find("top_p") && request.top_p == 0) fields.fail(invalid_request("'top_p' must be above 0", "top_p"));
  fields.integer("top_k", request.top_k, -1, 1 << 20);
  if (request.top_k < 0) request.top_k = 0;  // -1: off, as vLLM takes it
  fields.number("repetition_penalty", request.repetition_penalty, 0.01, 100);
  fields.number("frequency_penalty", request.frequency_penalty, -2, 2);
  fields.number("presence_penalty", request.presence_penalty, -2, 2);
  parse_logprobs(fields, request, endpoint, limits);
  fields.boolean("return_tokens_as_token_ids", request.tokens_as_ids);
  if (const json* bias = fields.find("logit_bias")) parse_logit_bias(*bias, request, fields, limits);
  refuse_unsupported(fields, endpoint);
  uint64_t seed = 0;
  if (fields.find("seed") != nullptr) {
    const json& value = *fields.find("seed");
    if (!value.is_number_integer()) {
      fields.fail(wrong_type("seed", "an integer", value));
    } else {
      seed = value.is_number_unsigned() ? value.get<uint64_t>() : static_cast<uint64_t>(value.get<int64_t>());
      request.seed = seed;
    }
  }
  fields.integer("n", request.n, 1, limits.max_choices);
  fields.boolean("stream", request.stream);
  fields.boolean("ignore_eos", request.ignore_eos);
  if (const json* options = fields.find("stream_options")) {
    if (!options->is_object()) {
      fields.fail(wrong_type("stream_options", "an object", *options));
    } else {
      Fields stream_fields(*options);
      stream_fields.boolean("include_usage", request.include_usage);
      if (stream_fields.error()) {
        ApiError error = *stream_fields.error();
        error.param = "stream_options." + error.param;
        fields.fail(error);
      }
    }
  }
  if (const json* stop = fields.find("stop")) parse_stop(*stop, request, fields, limits);
  if (const json* ids = fields.find("stop_token_ids")) parse_stop_token_ids(*ids, request, fields, limits);
  if (const json* entities = fields.find("entities")) parse_entities(*entities, request, fields, limits);
  if (const json* allowed = fields.find("allowed")) parse_allowed(*allowed, request, fields, limits);
  fields.integer("max_items", request.max_items, 1, static_cast<int64_t>(limits.max_allowed));
  if (fields.find("max_items") != nullptr && request.allowed.empty()) {
    fields.fail(invalid_request("'max_items' needs 'allowed'", "max_items"));
  }
  if (!request.allowed.empty() && request.ignore_eos) {
    fields.fail(
        invalid_request("'ignore_eos' cannot be used with 'allowed' (the list ends at the end token)", "ignore_eos"));
  }
  if (const json* format = fields.find("response_format")) parse_response_format(*format, request, fields);
  if (request.min_tokens > 0 && (!request.allowed.empty() || request.response_format != ResponseFormat::kText)) {
    // A constraint ends at its end token when its output is whole, which min_tokens would forbid.
    fields.fail(
        invalid_request("'min_tokens' cannot be used with 'allowed' or a JSON 'response_format'", "min_tokens"));
  }
  if (request.response_format != ResponseFormat::kText) {
    if (!request.allowed.empty()) {
      fields.fail(invalid_request("'allowed' and a JSON 'response_format' cannot be used together", "allowed"));
    }
    if (request.ignore_eos) {
      fields.fail(
          invalid_request("'ignore_eos' cannot be used with a JSON 'response_format' (the value ends at the "
                          "end token)",
                          "ignore_eos"));
    }
  }
  if (const json* timeout = fields.find("timeout")) {
    if (!timeout->is_number() || !(timeout->get<double>() > 0) || timeout->get<double>() > 3600) {
      fields.fail(invalid_request("'timeout' must be a number of seconds in (0, 3600]", "timeout"));
    } else {
      request.timeout_seconds = timeout->get<double>();
    }
  }
  if (fields.error()) return *fields.error();
  return request;
}

std::string format_chatml(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const ChatMessage& message : messages)
    text += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
  text += "<|im_start|>assistant\n";
  return text;
}

namespace {

// The `timings` extension, when the result has them: where and how fast the call ran.
void add_timings(const CompletionResult& result, json& body) {
  if (result.total_ms <= 0) return;
  body["timings"] = {{"ttft_ms", result.ttft_ms},
                     {"total_ms", result.total_ms},
                     {"prefill_node", result.prefill_node},
                     {"decode_node", result.decode_node}};
}

// JSON has no -inf (a token the model rules out); OpenAI writes -9999 for it.
double json_logprob(float logprob) { return std::isfinite(logprob) ? static_cast<double>(logprob) : -9999.0; }

// The token's text, valid UTF-8 (U+FFFD for bytes that are not), or "token_id:N".
std::string token_text(const TokenChoice& choice, bool as_id) {
  if (as_id) return "token_id:" + std::to_string(choice.id);
  std::string text;
  append_utf8_lossy(choice.bytes, /*end_of_input=*/true, text);
  return text;
}

json chat_token_json(const TokenChoice& choice, bool as_id) {
  json bytes = json::array();
  for (unsigned char byte : choice.bytes) bytes.push_back(static_cast<int>(byte));
  return {{"token", token_text(choice, as_id)}, {"logprob", json_logprob(choice.logprob)}, {"bytes", bytes}};
}

// Completions: the legacy parallel lists. Chat: one object per token under `content`.
json logprobs_json(Endpoint endpoint, const std::vector<LogprobEntry>& entries, bool as_ids) {
  if (endpoint == Endpoint::kChatCompletions) {
    json content = json::array();
    for (const LogprobEntry& entry : entries) {
      json token = chat_token_json(entry.token, as_ids);
      token["top_logprobs"] = json::array();
      for (const TokenChoice& top : entry.top) token["top_logprobs"].push_back(chat_token_json(top, as_ids));
      content.push_back(std::move(token));
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), logprobs = json::array(), tops = json::array(), offsets = json::array();
  for (const LogprobEntry& entry : entries) {
    tokens.push_back(token_text(entry.token, as_ids));
    logprobs.push_back(json_logprob(entry.token.logprob));
    json top = json::object();
    for (const TokenChoice& choice : entry.top) top[token_text(choice, as_ids)] = json_logprob(choice.logprob);
    tops.push_back(std::move(top));
    offsets.push_back(entry.text_offset);
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(logprobs)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

}  // namespace

std::string completion_json(Endpoint endpoint, const CompletionResult& result) {
  json choices = json::array();
  for (size_t index = 0; index < result.choices.size(); ++index) {
    const CompletionChoice& each = result.choices[index];
    json choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", nullable(each.finish_reason)}};
    if (each.logprobs) choice["logprobs"] = logprobs_json(endpoint, *each.logprobs, result.tokens_as_ids);
    if (endpoint == Endpoint::kCompletions) {
      choice["text"] = each.text;
    } else {
      choice["message"] = {{"role", "assistant"}, {"content", each.text}};
    }
    choices.push_back(std::move(choice));
  }
  json body = head_json(endpoint, result, endpoint == Endpoint::kCompletions ? "text_completion" : "chat.completion");
  body["choices"] = std::move(choices);
  body["usage"] = usage_json(result.usage);
  add_timings(result, body);
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string chunk_json(Endpoint endpoint, const CompletionResult& head, int index, std::string_view text, bool first,
                       std::string_view finish_reason, const std::vector<LogprobEntry>* logprobs) {
  json choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", nullable(finish_reason)}};
  if (logprobs != nullptr) choice["logprobs"] = logprobs_json(endpoint, *logprobs, head.tokens_as_ids);
  json body;
  if (endpoint == Endpoint::kCompletions) {
    body = head_json(endpoint, head, "text_completion");
    choice["text"] = std::string(text);
  } else {
    body = head_json(endpoint, head, "chat.completion.chunk");
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = std::string(text);
    choice["delta"] = delta;
  }
  body["choices"] = json::array({choice});
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string usage_chunk_json(Endpoint endpoint, const CompletionResult& head) {
  json body =
      head_json(endpoint, head, endpoint == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk");
  body["choices"] = json::array();
  body["usage"] = usage_json(head.usage);
  add_timings(head, body);
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace recgpt::router
