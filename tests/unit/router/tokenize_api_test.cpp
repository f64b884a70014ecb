// vLLM's /tokenize and /detokenize bodies: a prompt, a chat or token ids tokenize as the completion endpoints
// would; ids come back as the tokenizer decodes them; bad bodies are refused naming the field.
#include "router/tokenize_api.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/unit/engine/tiny_preset.h"

namespace recgpt::router {
namespace {

using nlohmann::json;

const TokenizeSettings kSettings{"m", 4096};

json answer(const std::variant<std::string, ApiError>& result) {
  if (const auto* error = std::get_if<ApiError>(&result)) FAIL(error->message);
  return json::parse(std::get<std::string>(result));
}

ApiError refusal(const std::variant<std::string, ApiError>& result) {
  REQUIRE(std::holds_alternative<ApiError>(result));
  return std::get<ApiError>(result);
}

TEST_CASE("tokenize answers the tokens the completion endpoints would compute", "[router][tokenize]") {
  testing::TinyPreset tiny;
  const ApiLimits limits;
  const json prompt =
      answer(tokenize_answer(R"({"model": "m", "prompt": "héllo wörld 😀"})", tiny.tokenizer, limits, kSettings));
  CHECK(prompt["tokens"] == tiny.tokenizer.encode("héllo wörld 😀"));
  CHECK(prompt["count"] == prompt["tokens"].size());
  CHECK(prompt["max_model_len"] == 4096);
  const json chat = answer(tokenize_answer(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}]})",
                                           tiny.tokenizer, limits, kSettings));
  CHECK(chat["tokens"] == tiny.tokenizer.encode(format_chatml({{"user", "hi"}})));
  const json ids = answer(tokenize_answer(R"({"model": "m", "prompt": [5, 6, 7]})", tiny.tokenizer, limits, kSettings));
  CHECK(ids["tokens"] == std::vector<int32_t>{5, 6, 7});

  const json text = answer(
      detokenize_answer(json{{"model", "m"}, {"tokens", prompt["tokens"]}}.dump(), tiny.tokenizer, limits, kSettings));
  CHECK(text["prompt"] == "héllo wörld 😀");
}

TEST_CASE("bad tokenize and detokenize bodies are refused naming the field", "[router][tokenize]") {
  testing::TinyPreset tiny;
  const ApiLimits limits;
  CHECK(refusal(tokenize_answer(R"({"model": "other", "prompt": "x"})", tiny.tokenizer, limits, kSettings)).status ==
        404);
  CHECK(refusal(tokenize_answer(R"({"model": "m"})", tiny.tokenizer, limits, kSettings)).param == "prompt");
  CHECK(refusal(tokenize_answer("{oops", tiny.tokenizer, limits, kSettings)).status == 400);
  const std::string outside = R"({"model": "m", "prompt": [)" + std::to_string(tiny.tokenizer.vocab_size()) + "]}";
  CHECK(refusal(tokenize_answer(outside, tiny.tokenizer, limits, kSettings)).param == "prompt");
  CHECK(refusal(detokenize_answer(R"({"model": "m", "tokens": [1, -2]})", tiny.tokenizer, limits, kSettings)).param ==
        "tokens[1]");
  CHECK(refusal(detokenize_answer(R"({"model": "m", "tokens": "1 2"})", tiny.tokenizer, limits, kSettings)).param ==
        "tokens");
  CHECK(refusal(detokenize_answer(R"({"tokens": [1]})", tiny.tokenizer, limits, kSettings)).param == "model");
  CHECK(refusal(detokenize_answer(R"({"model": "x", "tokens": [1]})", tiny.tokenizer, limits, kSettings)).status ==
        404);
  const std::string deep = R"({"model": "m", "tokens": )" + std::string(300, '[') + std::string(300, ']') + "}";
  CHECK_THAT(refusal(detokenize_answer(deep, tiny.tokenizer, limits, kSettings)).message,
             Catch::Contains("nests deeper"));
}

}  // namespace
}  // namespace recgpt::router
