// Decoding constrained to "prefix + free text" lines: random walks over the allowed tokens and the generator
// under the constraint always write lines of that shape, within the line and token limits.
#include "engine/lines_processor.h"

#include <catch2/catch.hpp>
#include <limits>
#include <map>
#include <random>

#include "engine/generator.h"
#include "tests/unit/engine/tiny_preset.h"

namespace recgpt {
namespace {

using TinyTokenizer = testing::TinyPreset;

// Splits decoded text into lines; checks each against the shape.
void check_lines(const std::string& text, const std::string& prefix, int max_lines) {
  INFO(text);
  int lines = 0;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    CHECK(line.rfind(prefix, 0) == 0);
    CHECK(line.size() > prefix.size());
    ++lines;
    begin = end + 1;
  }
  CHECK(lines >= 1);
  CHECK(lines <= max_lines);
}

TEST_CASE("random walks under a lines shape write prefixed lines within the limits", "[lines]") {
  TinyTokenizer tiny;
  auto line_tokens = std::make_shared<LineTokens>(tiny.tokenizer);
  const int32_t newline = tiny.tokenizer.encode("\n")[0];
  const int32_t end = *tiny.tokenizer.token_to_id("<|im_end|>");
  CHECK_FALSE(line_tokens->inline_token(newline));
  CHECK_FALSE(line_tokens->inline_token(end));
  const std::string prefix = "Persona: ";
  std::mt19937 random(5);
  for (int walk = 0; walk < 100; ++walk) {
    LinesShape shape{tiny.tokenizer.encode(prefix), 1 + walk % 4, 1 + walk % 7, newline, end};
    LinesProcessor processor(line_tokens, shape, 0);
    std::vector<int32_t> generated;
    for (int step = 0; step < 400; ++step) {
      std::vector<int32_t> allowed;
      for (int32_t token = 0; token < tiny.tokenizer.vocab_size(); ++token)
        if (processor.allows(token)) allowed.push_back(token);
      REQUIRE_FALSE(allowed.empty());
      // Favour the line break and the end a little, so walks finish lines of many lengths.
      int32_t token = allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(random)];
      if (processor.allows(newline) && random() % 3 == 0) token = newline;
      if (processor.allows(end) && random() % 4 == 0) token = end;
      REQUIRE(processor.advance(token));
      if (token == end) break;
      generated.push_back(token);
    }
    CHECK_FALSE(processor.allows(end));  // ended
    check_lines(tiny.tokenizer.decode(generated), prefix, shape.max_lines);
    // No line has more free tokens than allowed: count tokens between prefix and break.
    int free_tokens = 0;
    size_t in_prefix = 0;
    for (int32_t token : generated) {
      if (token == newline) {
        free_tokens = 0;
        in_prefix = 0;
      } else if (in_prefix < shape.prefix.size()) {
        ++in_prefix;
      } else {
        CHECK(++free_tokens <= shape.max_line_tokens);
      }
    }
  }
}

TEST_CASE("process masks what the shape forbids, picks up past the prompt, and refuses a token off the shape",
          "[lines]") {
  TinyTokenizer tiny;
  auto line_tokens = std::make_shared<LineTokens>(tiny.tokenizer);
  const LinesShape shape{tiny.tokenizer.encode("Persona: "), 2, 8, tiny.tokenizer.encode("\n")[0],
                         *tiny.tokenizer.token_to_id("<|im_end|>")};
  const std::vector<int32_t> prompt = {4, 5};
  std::vector<int32_t> tokens = prompt;
  tokens.push_back(shape.prefix[0]);
  LinesProcessor processor(line_tokens, shape, prompt.size());
  std::vector<float> logits(static_cast<size_t>(tiny.tokenizer.vocab_size()), 0.5f);
  processor.process(logits, tokens);
  for (size_t token = 0; token < logits.size(); ++token) {
    const bool expected = shape.prefix.size() > 1 ? static_cast<int32_t>(token) == shape.prefix[1]
                                                  : line_tokens->inline_token(static_cast<int32_t>(token));
    CHECK(std::isfinite(logits[token]) == expected);
  }
  LinesProcessor off(line_tokens, shape, 0);
  CHECK_FALSE(off.advance(shape.end));  // no line yet
  CHECK_FALSE(off.allows(shape.prefix[0]));
}

TEST_CASE("the generator under a lines shape writes prefixed lines", "[lines][generator]") {
  TinyTokenizer tiny;
  auto line_tokens = std::make_shared<LineTokens>(tiny.tokenizer);
  const int32_t end = *tiny.tokenizer.token_to_id("<|im_end|>");
  const LinesShape shape{tiny.tokenizer.encode("Persona: "), 3, 12, tiny.tokenizer.encode("\n")[0], end};
  GeneratorOptions options;
  options.kv_cache_bytes = 8 << 20;
  auto generator = Generator::create(*tiny.model, options).value();
  std::vector<int64_t> ids;
  for (int call = 0; call < 4; ++call) {
    GenerationRequest request;
    request.prompt = tiny.tokenizer.encode("personas of user " + std::to_string(call) + ":\n");
    request.max_new_tokens = 200;
    request.sampling.temperature = call == 0 ? 0.0f : 1.0f;
    request.sampling.seed = static_cast<uint64_t>(call);
    request.stop_tokens = {end};
    request.logits_processor = std::make_shared<LinesProcessor>(line_tokens, shape, request.prompt.size());
    ids.push_back(generator->add(std::move(request)).value());
  }
  std::map<int64_t, std::vector<int32_t>> outputs;
  std::map<int64_t, FinishReason> finishes;
  for (int step = 0; step < 1000 && !generator->idle(); ++step) {
    auto produced = generator->step();
    REQUIRE(produced.is_ok());
    for (const StepToken& token : *produced) {
      if (token.token >= 0 && token.token != end) outputs[token.sequence_id].push_back(token.token);
      if (token.finish != FinishReason::kNone) finishes[token.sequence_id] = token.finish;
    }
  }
  for (int64_t id : ids) {
    CHECK(finishes[id] == FinishReason::kStopToken);
    check_lines(tiny.tokenizer.decode(outputs[id]), "Persona: ", 3);
  }
}

}  // namespace
}  // namespace recgpt
