// The OpenAI request parser and response shapes: valid bodies parse into the request the router runs; every
// kind of bad input is a 400 naming the field.
#include "router/openai_api.h"

#include <catch2/catch.hpp>
#include <limits>
#include <nlohmann/json.hpp>

namespace recgpt::router {
namespace {

using nlohmann::json;

ApiLimits limits() {
  ApiLimits limits;
  limits.entity_dim = 3;
  return limits;
}

CompletionRequest parse_ok(const std::string& body, Endpoint endpoint = Endpoint::kCompletions) {
  auto parsed = parse_completion_request(body, endpoint, limits());
  if (auto* error = std::get_if<ApiError>(&parsed)) FAIL(error->message);
  return std::get<CompletionRequest>(parsed);
}

// A schema of `levels` objects, each the items of the one around it.
std::string nested_items(int levels) {
  std::string text;
  for (int i = 0; i < levels; ++i) text += R"({"items": )";
  text += "{}";
  return text + std::string(static_cast<size_t>(levels), '}');
}

ApiError parse_error(const std::string& body, Endpoint endpoint = Endpoint::kCompletions) {
  auto parsed = parse_completion_request(body, endpoint, limits());
  REQUIRE(std::holds_alternative<ApiError>(parsed));
  return std::get<ApiError>(parsed);
}

TEST_CASE("a completion request parses with OpenAI's fields and our extensions", "[router][openai]") {
  const CompletionRequest request = parse_ok(R"({"model": "m", "prompt": "hi <|entity|>", "max_tokens": 7,
      "temperature": 0, "top_p": 0.5, "top_k": 20, "seed": 42, "stop": ["\n", "END"], "stream": true,
      "stream_options": {"include_usage": true}, "entities": ["item:1", [0.5, 1, -2]], "user": "ignored",
      "repetition_penalty": 1.3, "timeout": 2.5, "ignore_eos": true})");
  CHECK(request.model == "m");
  CHECK(request.prompt == "hi <|entity|>");
  CHECK(request.max_tokens == 7);
  CHECK(request.temperature == 0);
  CHECK(request.top_p == 0.5f);
  CHECK(request.top_k == 20);
  CHECK(request.seed == 42u);
  CHECK(request.stop == std::vector<std::string>{"\n", "END"});
  CHECK(request.stream);
  CHECK(request.include_usage);
  REQUIRE(request.entities.size() == 2);
  CHECK(request.entities[0].id == "item:1");
  CHECK(request.entities[1].vector == std::vector<float>{0.5f, 1, -2});
  CHECK(request.repetition_penalty == 1.3f);
  CHECK(request.timeout_seconds == 2.5);
  CHECK(request.ignore_eos);
  const CompletionRequest constrained =
      parse_ok(R"({"model": "m", "prompt": "x", "allowed": ["red dress", "shoes"], "max_items": 2})");
  CHECK(constrained.allowed == std::vector<std::string>{"red dress", "shoes"});
  CHECK(constrained.max_items == 2);
  CHECK(parse_ok(R"({"model": "m", "prompt": "x"})").allowed.empty());
  CHECK(parse_ok(R"({"model": "m", "prompt": [1, 2, 3]})").prompt_token_ids == std::vector<int32_t>{1, 2, 3});
  CHECK(parse_ok(R"({"model": "m", "prompt": ["one"]})").prompt == "one");
  CHECK(parse_ok(R"({"model": "m", "prompt": "x"})").max_tokens == 16);
}

TEST_CASE("penalties and logprobs parse in each endpoint's shape", "[router][openai]") {
  const CompletionRequest completion =
      parse_ok(R"({"model": "m", "prompt": "x", "frequency_penalty": -1.5, "presence_penalty": 2, "logprobs": 3})");
  CHECK(completion.frequency_penalty == -1.5f);
  CHECK(completion.presence_penalty == 2.0f);
  CHECK(completion.logprobs);
  CHECK(completion.top_logprobs == 3);
  const CompletionRequest zero = parse_ok(R"({"model": "m", "prompt": "x", "logprobs": 0})");
  CHECK(zero.logprobs);
  CHECK(zero.top_logprobs == 0);
  CHECK(zero.n == 1);
  CHECK(zero.stop_token_ids.empty());
  CHECK(parse_ok(R"({"model": "m", "prompt": "x", "stop_token_ids": [7, 0]})").stop_token_ids ==
        std::vector<int32_t>{7, 0});
  CHECK(parse_ok(R"({"model": "m", "prompt": "x", "n": 16})").n == 16);
  CHECK_FALSE(zero.tokens_as_ids);
  CHECK(parse_ok(R"({"model": "m", "prompt": "x", "logprobs": 1, "return_tokens_as_token_ids": true})").tokens_as_ids);
  const CompletionRequest plain = parse_ok(R"({"model": "m", "prompt": "x", "logprobs": null})");
  CHECK_FALSE(plain.logprobs);
  CHECK(plain.frequency_penalty == 0);
  const std::string messages = R"("messages": [{"role": "user", "content": "x"}])";
  const CompletionRequest chat = parse_ok(
      R"({"model": "m", )" + messages + R"(, "logprobs": true, "top_logprobs": 20})", Endpoint::kChatCompletions);
  CHECK(chat.logprobs);
  CHECK(chat.top_logprobs == 20);
  CHECK_FALSE(
      parse_ok(R"({"model": "m", )" + messages + R"(, "logprobs": false})", Endpoint::kChatCompletions).logprobs);
  const CompletionRequest bounded = parse_ok(R"({"model": "m", "prompt": "x", "max_tokens": 9, "min_tokens": 9})");
  CHECK(bounded.min_tokens == 9);
  CHECK(parse_ok(R"({"model": "m", "prompt": "x"})").min_tokens == 0);
  const CompletionRequest biased = parse_ok(R"({"model": "m", "prompt": "x", "logit_bias": {"7": -100, "12": 2.5}})");
  CHECK(biased.logit_bias == std::vector<std::pair<int32_t, float>>{{7, -100.0f}, {12, 2.5f}});  // the body's order
  // OpenAI fields at their do-nothing values, as SDKs send them, are accepted.
  parse_ok(R"({"model": "m", "prompt": "x", "logit_bias": {}, "echo": false, "suffix": "", "best_of": 1,
      "response_format": {"type": "text"}})");
  parse_ok(R"({"model": "m", )" + messages + R"(, "tools": [], "response_format": {"type": "text"}})",
           Endpoint::kChatCompletions);
}

TEST_CASE("response_format parses json_object and json_schema keeping the schema's key order", "[router][openai]") {
  const std::string messages = R"("messages": [{"role": "user", "content": "x"}])";
  const CompletionRequest object = parse_ok(
      R"({"model": "m", )" + messages + R"(, "response_format": {"type": "json_object"}})", Endpoint::kChatCompletions);
  CHECK(object.response_format == ResponseFormat::kJsonObject);
  CHECK(object.json_schema.empty());
  const CompletionRequest schema = parse_ok(
      R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "intent-1",
          "strict": true, "schema": {"type": "object", "properties": {"zeta": {"type": "string"},
          "alpha": {"type": "integer"}}, "required": ["zeta", "alpha"]}}}})");
  CHECK(schema.response_format == ResponseFormat::kJsonSchema);
  CHECK(
      schema.json_schema ==
      R"({"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}},"required":["zeta","alpha"]})");
  CHECK(parse_ok(R"({"model": "m", "prompt": "x", "response_format": {"type": "text"}})").response_format ==
        ResponseFormat::kText);
}

TEST_CASE("logprobs answer in each endpoint's shape", "[router][openai]") {
  CompletionResult result;
  result.id = "cmpl-2";
  result.choices.push_back({.text = "a\xc3\xa9", .finish_reason = "length", .logprobs = std::nullopt});
  // "a", then "é" split over two tokens: each token's text shows what of it is valid, `bytes` the exact bytes.
  std::optional<std::vector<LogprobEntry>>& logprobs = result.choices[0].logprobs;
  logprobs =
      std::vector<LogprobEntry>{{{"a", -0.25f}, {{"a", -0.25f}, {"b", -std::numeric_limits<float>::infinity()}}, 0},
                                {{"\xc3", -1.5f}, {{"\xc3", -1.5f}, {"c", -2.0f}}, 1},
                                {{"\xa9", -0.5f}, {{"\xa9", -0.5f}, {"d", -3.0f}}, 1}};
  const json legacy = json::parse(completion_json(Endpoint::kCompletions, result))["choices"][0]["logprobs"];
  CHECK(legacy["tokens"] == json({"a", "\xef\xbf\xbd", "\xef\xbf\xbd"}));
  CHECK(legacy["token_logprobs"] == json({-0.25, -1.5, -0.5}));
  CHECK(legacy["top_logprobs"][0] == json({{"a", -0.25}, {"b", -9999.0}}));  // -inf has no JSON
  CHECK(legacy["text_offset"] == json({0, 1, 1}));
  const json chat = json::parse(completion_json(Endpoint::kChatCompletions, result))["choices"][0]["logprobs"];
  REQUIRE(chat["content"].size() == 3);
  CHECK(chat["content"][1]["logprob"] == -1.5);
  CHECK(chat["content"][1]["bytes"] == json({0xc3}));
  CHECK(chat["content"][2]["top_logprobs"][1] == json({{"token", "d"}, {"logprob", -3.0}, {"bytes", {100}}}));
  CHECK(chat["refusal"].is_null());
  const std::vector<LogprobEntry> chunk = {logprobs->front()};
  const json streamed = json::parse(chunk_json(Endpoint::kChatCompletions, result, 0, "a", false, "", &chunk));
  CHECK(streamed["choices"][0]["logprobs"]["content"][0]["token"] == "a");
  CHECK(json::parse(chunk_json(Endpoint::kChatCompletions, result, 0, "a", false, ""))["choices"][0]["logprobs"]
            .is_null());
  result.tokens_as_ids = true;
  (*logprobs)[0].token.id = 64;
  const json ids = json::parse(completion_json(Endpoint::kCompletions, result))["choices"][0]["logprobs"];
  CHECK(ids["tokens"][0] == "token_id:64");
  logprobs.reset();
  CHECK(json::parse(completion_json(Endpoint::kCompletions, result))["choices"][0]["logprobs"].is_null());
}

TEST_CASE("a chat request parses messages and formats them as ChatML", "[router][openai]") {
  const CompletionRequest request = parse_ok(R"({"model": "m", "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}]})",
                                             Endpoint::kChatCompletions);
  REQUIRE(request.messages.size() == 2);
  CHECK(request.max_tokens == limits().default_chat_max_tokens);
  CHECK(format_chatml(request.messages) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  CHECK(parse_ok(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5})",
                 Endpoint::kChatCompletions)
            .max_tokens == 5);
}

TEST_CASE("bad request bodies are refused naming the field", "[router][openai]") {
  struct Case {
    std::string body;
    std::string param;
    Endpoint endpoint = Endpoint::kCompletions;
  };
  const std::vector<Case> cases = {
      {"{not json", ""},
      {"[1, 2]", ""},
      {R"({"prompt": "x"})", "model"},
      {R"({"model": 3, "prompt": "x"})", "model"},
      {R"({"model": "m"})", "prompt"},
      {R"({"model": "m", "prompt": 5})", "prompt"},
      {R"({"model": "m", "prompt": []})", "prompt"},
      {R"({"model": "m", "prompt": ["a", "b"]})", "prompt"},
      {R"({"model": "m", "prompt": [1, -2]})", "prompt"},
      {R"({"model": "m", "prompt": "x", "max_tokens": "10"})", "max_tokens"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 0})", "max_tokens"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 1e3})", "max_tokens"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 18446744073709551615})", "max_tokens"},
      {R"({"model": "m", "prompt": "x", "temperature": 3})", "temperature"},
      {R"({"model": "m", "prompt": "x", "temperature": "hot"})", "temperature"},
      {R"({"model": "m", "prompt": "x", "top_p": 0})", "top_p"},
      {R"({"model": "m", "prompt": "x", "n": 17})", "n"},
      {R"({"model": "m", "prompt": "x", "stop_token_ids": 5})", "stop_token_ids"},
      {R"({"model": "m", "prompt": "x", "stop_token_ids": [5, -1]})", "stop_token_ids"},
      {R"({"model": "m", "prompt": "x", "stop_token_ids": ["5"]})", "stop_token_ids"},
      {R"({"model": "m", "prompt": "x", "n": 0})", "n"},
      {R"({"model": "m", "prompt": "x", "stream": "yes"})", "stream"},
      {R"({"model": "m", "prompt": "x", "ignore_eos": 1})", "ignore_eos"},
      {R"({"model": "m", "prompt": "x", "stream_options": {"include_usage": 1}})", "stream_options.include_usage"},
      {R"({"model": "m", "prompt": "x", "stop": [1]})", "stop"},
      {R"({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "stop"},
      {R"({"model": "m", "prompt": "x", "seed": 1.5})", "seed"},
      {R"({"model": "m", "prompt": "x", "entities": [[1, 2]]})", "entities[0]"},
      {R"({"model": "m", "prompt": "x", "entities": ["a", {"id": 1}]})", "entities[1]"},
      {R"({"model": "m", "prompt": "x", "entities": [[1, 2, null]]})", "entities[0]"},
      {R"({"model": "m", "prompt": "x", "timeout": -1})", "timeout"},
      {R"({"model": "m", "prompt": "x", "allowed": "red"})", "allowed"},
      {R"({"model": "m", "prompt": "x", "allowed": []})", "allowed"},
      {R"({"model": "m", "prompt": "x", "allowed": ["red", 2]})", "allowed[1]"},
      {R"({"model": "m", "prompt": "x", "allowed": ["red", ""]})", "allowed[1]"},
      {R"({"model": "m", "prompt": "x", "allowed": ["two\nlines"]})", "allowed[0]"},
      {R"({"model": "m", "prompt": "x", "allowed": ["red"], "max_items": 0})", "max_items"},
      {R"({"model": "m", "prompt": "x", "max_items": 2})", "max_items"},
      {R"({"model": "m", "prompt": "x", "allowed": ["red"], "ignore_eos": true})", "ignore_eos"},
      {R"({"model": "m", "prompt": "x", "frequency_penalty": 2.5})", "frequency_penalty"},
      {R"({"model": "m", "prompt": "x", "presence_penalty": "high"})", "presence_penalty"},
      {R"({"model": "m", "prompt": "x", "logprobs": 21})", "logprobs"},
      {R"({"model": "m", "prompt": "x", "logprobs": true})", "logprobs"},
      {R"({"model": "m", "prompt": "x", "logit_bias": {"50256": -101}})", "logit_bias"},
      {R"({"model": "m", "prompt": "x", "logit_bias": {"tok": 1}})", "logit_bias"},
      {R"({"model": "m", "prompt": "x", "logit_bias": {"-3": 1}})", "logit_bias"},
      {R"({"model": "m", "prompt": "x", "logit_bias": {"7": "up"}})", "logit_bias"},
      {R"({"model": "m", "prompt": "x", "logit_bias": [1]})", "logit_bias"},
      {R"({"model": "m", "prompt": "x", "echo": true})", "echo"},
      {R"({"model": "m", "prompt": "x", "suffix": "end"})", "suffix"},
      {R"({"model": "m", "prompt": "x", "best_of": 3})", "best_of"},
      {R"({"model": "m", "prompt": "x", "response_format": "json"})", "response_format"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a",
          "schema": )" +
           nested_items(70) + "}}}",
       "response_format.json_schema.schema"},
      {R"({"model": "m", "prompt": )" + std::string(200, '[') + std::string(200, ']') + "}", ""},
      {R"({"model": "m", "prompt": "x", "max_tokens": 4, "min_tokens": 5})", "min_tokens"},
      {R"({"model": "m", "prompt": "x", "min_tokens": -1})", "min_tokens"},
      {R"({"model": "m", "prompt": "x", "min_tokens": 2, "allowed": ["a"]})", "min_tokens"},
      {R"({"model": "m", "prompt": "x", "min_tokens": 2, "response_format": {"type": "json_object"}})", "min_tokens"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "xml"}})", "response_format.type"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema"}})", "response_format.json_schema"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}})",
       "response_format.json_schema.name"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a b",
          "schema": {}}}})",
       "response_format.json_schema.name"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a"}}})",
       "response_format.json_schema.schema"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a",
          "schema": {"type": "string", "pattern": "^a"}}}})",
       "response_format.json_schema.schema"},
      {R"({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a",
          "strict": "yes", "schema": {}}}})",
       "response_format.json_schema.strict"},
      {R"({"model": "m", "prompt": "x", "allowed": ["a"], "response_format": {"type": "json_object"}})", "allowed"},
      {R"({"model": "m", "prompt": "x", "ignore_eos": true, "response_format": {"type": "json_object"}})",
       "ignore_eos"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": 3})", "logprobs",
       Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs",
       Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})",
       "top_logprobs", Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", "tools",
       Endpoint::kChatCompletions},
      {R"({"model": "m"})", "messages", Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": {}})", "messages", Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role", Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": [{"role": "robot", "content": "x"}]})", "messages[0].role",
       Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": [{"role": "user"}]})", "messages[0].content", Endpoint::kChatCompletions},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0]", Endpoint::kChatCompletions},
  };
  for (const Case& c : cases) {
    INFO(c.body);
    const ApiError error = parse_error(c.body, c.endpoint);
    CHECK(error.status == 400);
    CHECK(error.type == "invalid_request_error");
    CHECK(error.param == c.param);
    CHECK_FALSE(error.message.empty());
    const json body = json::parse(error_json(error));
    CHECK(body["error"]["message"] == error.message);
    CHECK(body["error"]["param"] == (c.param.empty() ? json(nullptr) : json(c.param)));
  }
}

TEST_CASE("responses and stream chunks have OpenAI's shapes", "[router][openai]") {
  CompletionResult result{.id = "chatcmpl-1",
                          .created = 1700000000,
                          .model = "m",
                          .choices = {{.text = "Hi", .finish_reason = "stop", .logprobs = std::nullopt},
                                      {.text = "Ho", .finish_reason = "length", .logprobs = std::nullopt}},
                          .usage = {12, 3, 8}};
  const json chat = json::parse(completion_json(Endpoint::kChatCompletions, result));
  CHECK(chat["object"] == "chat.completion");
  CHECK(chat["choices"][0]["message"]["content"] == "Hi");
  CHECK(chat["choices"][0]["finish_reason"] == "stop");
  CHECK(chat["choices"][1]["index"] == 1);
  CHECK(chat["choices"][1]["message"]["content"] == "Ho");
  CHECK(chat["choices"][1]["finish_reason"] == "length");
  CHECK(chat["usage"]["total_tokens"] == 15);
  CHECK(chat["usage"]["prompt_tokens_details"]["cached_tokens"] == 8);
  CHECK_FALSE(chat.contains("timings"));
  result.total_ms = 12.5;
  result.ttft_ms = 3;
  result.decode_node = "decode-0";
  const json timed = json::parse(completion_json(Endpoint::kCompletions, result));
  CHECK(timed["timings"]["total_ms"] == 12.5);
  CHECK(timed["timings"]["decode_node"] == "decode-0");
  result.total_ms = 0;
  const json first = json::parse(chunk_json(Endpoint::kChatCompletions, result, 0, "", true, ""));
  CHECK(first["object"] == "chat.completion.chunk");
  CHECK(first["choices"][0]["delta"]["role"] == "assistant");
  CHECK(first["choices"][0]["finish_reason"].is_null());
  const json last = json::parse(chunk_json(Endpoint::kChatCompletions, result, 1, "", false, "length"));
  CHECK(last["choices"][0]["delta"].empty());
  CHECK(last["choices"][0]["finish_reason"] == "length");
  CHECK(last["choices"][0]["index"] == 1);
  const json text = json::parse(chunk_json(Endpoint::kCompletions, result, 0, "lo", false, ""));
  CHECK(text["object"] == "text_completion");
  CHECK(text["choices"][0]["text"] == "lo");
  const json usage = json::parse(usage_chunk_json(Endpoint::kCompletions, result));
  CHECK(usage["choices"].empty());
  CHECK(usage["usage"]["completion_tokens"] == 3);
  CHECK_FALSE(usage.contains("timings"));
  result.total_ms = 7;
  CHECK(json::parse(usage_chunk_json(Endpoint::kCompletions, result))["timings"]["total_ms"] == 7);
}

}  // namespace
}  // namespace recgpt::router
