#include "router/tokenize_api.h"

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "engine/tokenizer.h"

namespace recgpt::router {
namespace {

using nlohmann::json;

ApiError model_not_found(const std::string& model, const TokenizeSettings& settings) {
  ApiError error =
      invalid_request("the model '" + model + "' does not exist; this router serves '" + settings.model_name + "'",
                      "model", "model_not_found");
  error.status = 404;
  return error;
}

}  // namespace

std::variant<std::string, ApiError> tokenize_answer(std::string_view body, const Tokenizer& tokenizer,
                                                    const ApiLimits& limits, const TokenizeSettings& settings) {
  // The completion endpoints' parser (which checks the depth first): a body with `messages` is a chat's.
  const bool chat =
      !check_body_shape(body, limits) && json::parse(body, nullptr, /*allow_exceptions=*/false).contains("messages");
  auto parsed = parse_completion_request(body, chat ? Endpoint::kChatCompletions : Endpoint::kCompletions, limits);
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  const CompletionRequest& request = std::get<CompletionRequest>(parsed);
  if (request.model != settings.model_name) return model_not_found(request.model, settings);
  const std::vector<int32_t> tokens = !request.prompt_token_ids.empty()
                                          ? request.prompt_token_ids
                                          : tokenizer.encode(chat ? format_chatml(request.messages) : request.prompt);
  for (int32_t token : tokens) {
    if (token >= tokenizer.vocab_size()) {
      return invalid_request("token id " + std::to_string(token) + " is outside the vocabulary of " +
                                 std::to_string(tokenizer.vocab_size()),
                             "prompt");
    }
  }
  return json{{"count", tokens.size()}, {"max_model_len", settings.max_model_len}, {"tokens", tokens}}.dump();
}

std::variant<std::string, ApiError> detokenize_answer(std::string_view body, const Tokenizer& tokenizer,
                                                      const ApiLimits& limits, const TokenizeSettings& settings) {
  if (std::optional<ApiError> error = check_body_shape(body, limits)) return *error;
  const json document = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return invalid_request("the request body is not valid JSON", {}, "invalid_json");
  if (!document.is_object()) return invalid_request("the request body must be a JSON object");
  const auto model = document.find("model");
  if (model == document.end() || !model->is_string()) return invalid_request("'model' must be a string", "model");
  if (model->get<std::string>() != settings.model_name) return model_not_found(model->get<std::string>(), settings);
  const auto tokens = document.find("tokens");
  if (tokens == document.end() || !tokens->is_array()) {
    return invalid_request("'tokens' must be an array of token ids", "tokens");
  }
  if (tokens->size() > settings.max_tokens) {
    return invalid_request("'tokens' has more than " + std::to_string(settings.max_tokens) + " ids", "tokens");
  }
  std::vector<int32_t> ids;
  ids.reserve(tokens->size());
  for (size_t i = 0; i < tokens->size(); ++i) {
    const json& id = (*tokens)[i];
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= tokenizer.vocab_size()) {
      return invalid_request("'tokens[" + std::to_string(i) + "]' must be a token id from 0 to " +
                                 std::to_string(tokenizer.vocab_size() - 1),
                             "tokens[" + std::to_string(i) + "]");
    }
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return json{{"prompt", tokenizer.decode(ids)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace recgpt::router
