// Fuzz target: an HTTP body as the router takes it for /v1/completions and /v1/chat/completions. Anything must
// parse into a request or an ApiError (never crash); an error is a 4xx with a message whose JSON parses back;
// a request's numbers are in range and its chat prompt formats.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/status.h"
#include "engine/json_schema.h"
#include "router/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recgpt;
  using namespace recgpt::router;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  ApiLimits limits;
  limits.entity_dim = 4;
  for (Endpoint endpoint : {Endpoint::kCompletions, Endpoint::kChatCompletions}) {
    auto parsed = parse_completion_request(body, endpoint, limits);
    if (auto* error = std::get_if<ApiError>(&parsed)) {
      RECGPT_CHECK(error->status >= 400 && error->status < 500);
      RECGPT_CHECK(!error->message.empty());
      const auto json = nlohmann::json::parse(error_json(*error), nullptr, false);
      RECGPT_CHECK(!json.is_discarded() && json["error"]["message"].is_string());
      continue;
    }
    const CompletionRequest& request = std::get<CompletionRequest>(parsed);
    RECGPT_CHECK(request.max_tokens >= 1 && request.max_tokens <= limits.max_tokens_limit);
    RECGPT_CHECK(request.min_tokens >= 0 && request.min_tokens <= request.max_tokens);
    RECGPT_CHECK(request.temperature >= 0 && request.temperature <= 2);
    RECGPT_CHECK(request.top_p > 0 && request.top_p <= 1);
    RECGPT_CHECK(request.stop.size() <= limits.max_stop_strings);
    RECGPT_CHECK(request.n >= 1 && request.n <= limits.max_choices);
    RECGPT_CHECK(request.top_logprobs >= 0 && request.top_logprobs <= limits.max_top_logprobs);
    RECGPT_CHECK(request.logprobs || request.top_logprobs == 0);
    RECGPT_CHECK(request.logit_bias.size() <= limits.max_logit_bias_tokens);
    RECGPT_CHECK(request.stop_token_ids.size() <= limits.max_stop_token_ids);
    for (int32_t token : request.stop_token_ids) RECGPT_CHECK(token >= 0);
    // The ranges engine/sampler.h's SamplingParams::validate() takes.
    RECGPT_CHECK(request.frequency_penalty >= -2 && request.frequency_penalty <= 2);
    RECGPT_CHECK(request.presence_penalty >= -2 && request.presence_penalty <= 2);
    for (auto [token, bias] : request.logit_bias) RECGPT_CHECK(token >= 0 && bias >= -100 && bias <= 100);
    for (const EntityInput& entity : request.entities)
      RECGPT_CHECK(!entity.id.empty() || entity.vector.size() == limits.entity_dim);
    if (endpoint == Endpoint::kChatCompletions) RECGPT_CHECK(!format_chatml(request.messages).empty());
    // A JSON schema the router passes on compiles (the nodes compile it again), and JSON excludes `allowed`.
    RECGPT_CHECK((request.response_format == ResponseFormat::kJsonSchema) == !request.json_schema.empty());
    if (!request.json_schema.empty()) RECGPT_CHECK(JsonSchema::compile(request.json_schema).is_ok());
    if (request.response_format != ResponseFormat::kText) RECGPT_CHECK(request.allowed.empty() && !request.ignore_eos);
  }
  return 0;
}
