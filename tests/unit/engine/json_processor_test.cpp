// Token masks for JSON output: the trie walk and the cache give exactly the tokens whose bytes the automaton
// accepts (checked token by token), and sequences drawn under the processor from random logits with a real
// tokenizer are JSON that an independent parser reads, shaped as the schema says.
#include "engine/json_processor.h"

#include <catch2/catch.hpp>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "engine/tokenizer.h"
#include "tests/unit/engine/tiny_preset.h"

namespace recgpt {
namespace {

using nlohmann::json;

const char* const kSchemas[] = {
    "{}",
    R"({"type": "object"})",
    R"({"type": "object", "properties": {"intent": {"enum": ["buy", "browse", "compare"]},
        "score": {"type": "number"}, "items": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "note": {"type": ["string", "null"]}}, "required": ["intent", "score"]})",
    R"({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4})",
};

std::shared_ptr<const JsonSchema> compiled(const char* text) {
  auto schema = JsonSchema::compile(text);
  REQUIRE(schema.is_ok());
  return std::move(schema).value();
}

// Every token whose bytes `matcher` accepts, fed one by one.
std::set<int32_t> brute_force(const JsonVocabulary& vocabulary, const JsonMatcher& matcher) {
  std::set<int32_t> tokens;
  for (int32_t id = 0; id < vocabulary.vocab_size(); ++id) {
    JsonMatcher copy = matcher;
    if (!vocabulary.token(id).empty() && copy.feed(vocabulary.token(id))) tokens.insert(id);
  }
  return tokens;
}

std::set<int32_t> members(const TokenMask& mask, int32_t vocab_size) {
  std::set<int32_t> tokens;
  for (int32_t id = 0; id < vocab_size; ++id) {
    if (mask.contains(id)) tokens.insert(id);
  }
  return tokens;
}

// Every byte alone, pieces of JSON texts, and a few empty (special) tokens.
std::vector<std::string> synthetic_vocabulary(std::mt19937& random) {
  std::set<std::string> pieces;
  for (int byte = 0; byte < 256; ++byte) pieces.insert(std::string(1, static_cast<char>(byte)));
  const std::string samples[] = {R"({"intent": "buy", "score": 0.5, "items": ["a b", "\u00e9"], "note": null})",
                                 R"([12, -3, 4e5, true, false, {"k": {}}])", "\"\xc3\xa9\xf0\x9f\x98\x80\\n\"",
                                 "  \n    ", "\"compare\", \"score\": -0.25e-3}"};
  for (const std::string& sample : samples) {
    for (size_t begin = 0; begin < sample.size(); ++begin) {
      for (size_t length = 2; length <= 6 && begin + length <= sample.size(); ++length) {
        if (random() % 3 == 0) pieces.insert(sample.substr(begin, length));
      }
    }
  }
  std::vector<std::string> tokens(pieces.begin(), pieces.end());
  for (int i = 0; i < 5; ++i) tokens.insert(tokens.begin() + static_cast<long>(random() % tokens.size()), "");
  return tokens;
}

TEST_CASE("json token masks equal the tokens the automaton accepts", "[json]") {
  std::mt19937 random(11);
  const auto vocabulary = std::make_shared<const JsonVocabulary>(synthetic_vocabulary(random));
  // One small cache for every schema, as a node shares one: masks are kept apart by grammar, and evicted.
  const auto cache = std::make_shared<JsonMaskCache>(8);
  for (const char* schema_text : kSchemas) {
    INFO(schema_text);
    const JsonGrammar grammar(compiled(schema_text), vocabulary, cache);
    for (int walk = 0; walk < 12; ++walk) {
      JsonMatcher matcher(grammar.schema());
      std::string text;
      for (int step = 0; step < 120 && !matcher.finished(); ++step) {
        INFO(text);
        const std::set<int32_t> expected = brute_force(*vocabulary, matcher);
        REQUIRE(members(grammar.compute_next_tokens(matcher), vocabulary->vocab_size()) == expected);
        REQUIRE(members(*grammar.next_tokens(matcher), vocabulary->vocab_size()) == expected);
        REQUIRE((!expected.empty() || matcher.complete()));  // a whole value may take nothing more but the end
        if (matcher.complete() && (expected.empty() || random() % 8 == 0)) break;
        auto pick = expected.begin();
        std::advance(pick, static_cast<long>(random() % expected.size()));
        REQUIRE(matcher.feed(vocabulary->token(*pick)));
        text += vocabulary->token(*pick);
      }
    }
    // Asked again in the same state, the cache answers.
    JsonMatcher start(grammar.schema());
    const uint64_t hits = cache->stats().hits;
    (void)grammar.next_tokens(start);
    (void)grammar.next_tokens(start);
    CHECK(cache->stats().hits >= hits + 1);
    CHECK(cache->stats().masks <= 8);
  }
}

TEST_CASE("json processor draws JSON that a parser reads with a real tokenizer", "[json]") {
  testing::TinyPreset tiny;
  const auto vocabulary = JsonVocabulary::from_tokenizer(tiny.tokenizer);
  const int32_t end = tiny.tokenizer.token_to_id("<|endoftext|>").value();
  const int32_t rows = tiny.tokenizer.vocab_size() + 7;  // the model's rows may outnumber the tokenizer's ids
  std::mt19937 random(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  int ended = 0;
  for (const char* schema_text : kSchemas) {
    const auto grammar = std::make_shared<const JsonGrammar>(compiled(schema_text), vocabulary);
    for (int sequence = 0; sequence < 10; ++sequence) {
      const std::vector<int32_t> prompt = {1, 2, 3};
      std::vector<int32_t> tokens = prompt;
      JsonProcessor processor(grammar, end, prompt.size());
      std::vector<float> logits(static_cast<size_t>(rows));
      while (tokens.size() < 3000 && tokens.back() != end) {
        for (float& logit : logits) logit = normal(random);
        processor.process(logits, tokens);
        const auto best = std::max_element(logits.begin(), logits.end());
        REQUIRE(std::isfinite(*best));
        for (int32_t id = tiny.tokenizer.vocab_size(); id < rows; ++id)
          REQUIRE(std::isinf(logits[static_cast<size_t>(id)]));
        tokens.push_back(static_cast<int32_t>(best - logits.begin()));
      }
      if (tokens.back() != end) continue;
      ++ended;
      const std::vector<int32_t> output(tokens.begin() + 3, tokens.end() - 1);
      const std::string text = tiny.tokenizer.decode(output);
      INFO(schema_text << "\n" << text);
      REQUIRE(json::accept(text));
      const json value = json::parse(text);
      if (std::string(schema_text).find("object") != std::string::npos) CHECK(value.is_object());
      if (std::string(schema_text).find("intent") != std::string::npos) {
        CHECK(std::set<std::string>{"buy", "browse", "compare"}.count(value.at("intent").get<std::string>()) == 1);
        CHECK(value.at("score").is_number());
        for (const auto& [key, item] : value.items()) {
          CHECK(std::set<std::string>{"intent", "score", "items", "note"}.count(key) == 1);
        }
      }
      if (std::string(schema_text).find("minItems") != std::string::npos) {
        REQUIRE(value.is_array());
        CHECK(value.size() >= 2);
        CHECK(value.size() <= 4);
        for (const json& item : value) CHECK(item.is_number_integer());
      }
      // Once ended, nothing more is allowed.
      processor.process(logits, tokens);
      CHECK(std::all_of(logits.begin(), logits.end(), [](float logit) { return std::isinf(logit); }));
    }
  }
  CHECK(ended >= 20);
}

TEST_CASE("json processor refuses a token the schema does not allow and allows the end only when whole", "[json]") {
  const std::vector<std::string> tokens = {"{", "}", "\"a\"", ":", "1", "x", ""};
  const auto vocabulary = std::make_shared<const JsonVocabulary>(tokens);
  const auto grammar = std::make_shared<const JsonGrammar>(JsonSchema::any_object(), vocabulary);
  const int32_t end = 6;
  JsonProcessor processor(grammar, end, 0);
  CHECK_FALSE(processor.allows(end));
  CHECK(processor.allows(0));
  CHECK_FALSE(processor.allows(4));  // the root is an object
  REQUIRE(processor.advance(0));
  CHECK(processor.allows(1));
  CHECK(processor.allows(2));
  REQUIRE(processor.advance(1));
  CHECK(processor.allows(end));
  CHECK_FALSE(processor.allows(0));
  JsonProcessor broken(grammar, end, 0);
  CHECK_FALSE(broken.advance(5));
  CHECK_FALSE(broken.allows(0));
}

}  // namespace
}  // namespace recgpt
