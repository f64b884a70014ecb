// Decoding constrained to a list of catalogue choices: the trie against the tokenizer, the allowed tokens at
// every step against a brute-force enumeration of valid lists, masking, 100K choices, and the generator
// decoding under the constraint (every item it writes is a catalogue choice).
#include "engine/choice_list_processor.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "engine/generator.h"
#include "tests/unit/engine/tiny_preset.h"

namespace recgpt {
namespace {

using TinyModelWithTokenizer = testing::TinyPreset;

const std::vector<std::string> kCatalogue = {
    "red dress", "red", "summer sale", "blue jeans", "running shoes", "shoes", "red dress shoes",
    "the cat",   "cat", "sale",        "red"};

// Brute force: the tokens that keep `generated` a prefix of some valid list (distinct choices joined by
// `separator`, ended by `end`, at most `max_items`), by trying every candidate against every choice.
std::set<int32_t> brute_force_allowed(const ChoiceTrie& trie, const ChoiceListShape& shape,
                                      const std::vector<int32_t>& generated) {
  std::vector<std::vector<int32_t>> done;
  std::vector<int32_t> current;
  for (int32_t token : generated) {
    if (token == shape.separator) {
      done.push_back(current);
      current.clear();
    } else {
      current.push_back(token);
    }
  }
  std::set<int32_t> allowed;
  const auto items = static_cast<int32_t>(done.size());
  auto unchosen = [&](std::span<const int32_t> tokens) {
    for (const auto& item : done)
      if (std::equal(item.begin(), item.end(), tokens.begin(), tokens.end())) return false;
    return true;
  };
  if (items >= shape.max_items) return {shape.end};
  if (current.empty() && items > 0) allowed.insert(shape.end);
  for (size_t c = 0; c < trie.num_choices(); ++c) {
    const std::span<const int32_t> tokens = trie.choice_tokens(static_cast<int32_t>(c));
    if (!unchosen(tokens)) continue;
    if (tokens.size() < current.size() || !std::equal(current.begin(), current.end(), tokens.begin())) continue;
    if (tokens.size() == current.size()) {
      if (current.empty()) continue;
      allowed.insert(shape.end);
      if (items + 1 < shape.max_items) allowed.insert(shape.separator);
    } else {
      allowed.insert(tokens[current.size()]);
    }
  }
  return allowed;
}

TEST_CASE("a choice trie holds each choice as the tokenizer writes it, once", "[choice]") {
  TinyModelWithTokenizer tiny;
  auto trie = ChoiceTrie::build(tiny.tokenizer, kCatalogue).value();
  CHECK(trie->num_choices() == kCatalogue.size() - 1);  // "red" twice
  for (const std::string& choice : kCatalogue) {
    const int32_t index = trie->find(choice);
    REQUIRE(index >= 0);
    const std::vector<int32_t> tokens = tiny.tokenizer.encode(choice);
    CHECK(std::vector<int32_t>(trie->choice_tokens(index).begin(), trie->choice_tokens(index).end()) == tokens);
    int32_t node = ChoiceTrie::kRoot;
    for (int32_t token : tokens) node = trie->child(node, token);
    CHECK(trie->choice_at(node) == index);
  }
  CHECK(trie->find("green") == -1);
  CHECK(trie->choices_below(ChoiceTrie::kRoot) == static_cast<int32_t>(trie->num_choices()));
}

TEST_CASE("bad choices and catalogues are refused naming the choice or the file's line", "[choice]") {
  TinyModelWithTokenizer tiny;
  for (const auto& [choices, fragment] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"ok", ""}, "choice 1 ('') is empty"},
           {{"two\nlines"}, "holds a line break"},
           {{"fine", "end <|im_end|>"}, "choice 1 ('end <|im_end|>') holds a special token"}}) {
    auto trie = ChoiceTrie::build(tiny.tokenizer, choices);
    REQUIRE_FALSE(trie.is_ok());
    CHECK(trie.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(trie.status().message(), Catch::Contains(fragment));
  }
  const std::string path = tiny.dir.file("tags.txt");
  std::ofstream(path) << "red dress\n\n  shoes \r\nbad <|im_start|> tag\n";
  auto loaded = ChoiceTrie::load(tiny.tokenizer, path);
  REQUIRE_FALSE(loaded.is_ok());
  CHECK_THAT(loaded.status().message(), Catch::Contains(path + ":4 ('bad <|im_start|> tag')"));
  std::ofstream(path) << "red dress\n\n  shoes \r\n";
  auto good = ChoiceTrie::load(tiny.tokenizer, path);
  REQUIRE(good.is_ok());
  CHECK((*good)->find("shoes") >= 0);
  std::ofstream(path) << "\n \n";
  CHECK(ChoiceTrie::load(tiny.tokenizer, path).status().code() == StatusCode::kInvalidArgument);
  CHECK(ChoiceTrie::load(tiny.tokenizer, path + ".missing").status().code() == StatusCode::kNotFound);
}

TEST_CASE(
    "at every step of random walks the allowed tokens are exactly the brute-force ones, and every walk is "
    "a list of distinct catalogue choices",
    "[choice]") {
  TinyModelWithTokenizer tiny;
  auto trie = ChoiceTrie::build(tiny.tokenizer, kCatalogue).value();
  const std::vector<int32_t> newline = tiny.tokenizer.encode("\n");
  REQUIRE(newline.size() == 1);
  std::mt19937 random(11);
  for (int walk = 0; walk < 300; ++walk) {
    const ChoiceListShape shape{1 + walk % 4, newline[0], tiny.id("<|im_end|>")};
    ChoiceListProcessor processor(trie, shape, 0);
    std::vector<int32_t> generated;
    for (int step = 0; step < 200; ++step) {
      const std::vector<int32_t> allowed = processor.allowed();
      const std::set<int32_t> expected = brute_force_allowed(*trie, shape, generated);
      INFO("walk " << walk << " step " << step);
      REQUIRE(std::set<int32_t>(allowed.begin(), allowed.end()) == expected);
      REQUIRE_FALSE(allowed.empty());
      const int32_t token = allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(random)];
      REQUIRE(processor.advance(token));
      if (token == shape.end) break;
      generated.push_back(token);
    }
    REQUIRE(processor.allowed().empty());  // ended
    const ParsedChoiceList parsed = parse_choice_list(*trie, tiny.tokenizer.decode(generated));
    CHECK(parsed.unknown.empty());
    CHECK(static_cast<int32_t>(parsed.items.size()) <= shape.max_items);
    CHECK(std::set<std::string>(parsed.items.begin(), parsed.items.end()).size() == parsed.items.size());
    CHECK(parsed.items.size() == processor.items().size());
  }
}

TEST_CASE(
    "process masks all but the allowed logits, picks its state up past the prompt, and a token off the "
    "list allows nothing",
    "[choice]") {
  TinyModelWithTokenizer tiny;
  auto trie = ChoiceTrie::build(tiny.tokenizer, kCatalogue).value();
  const ChoiceListShape shape{2, tiny.tokenizer.encode("\n")[0], tiny.id("<|im_end|>")};
  const std::vector<int32_t> prompt = {5, 6, 7};
  const std::vector<int32_t> red = tiny.tokenizer.encode("red");
  // A first token sampled elsewhere (a prefill node): the state follows it.
  std::vector<int32_t> tokens = prompt;
  tokens.push_back(red[0]);
  ChoiceListProcessor processor(trie, shape, prompt.size());
  std::vector<float> logits(static_cast<size_t>(tiny.tokenizer.vocab_size()), 1.5f);
  processor.process(logits, tokens);
  ChoiceListProcessor reference(trie, shape, 0);
  REQUIRE(reference.advance(red[0]));
  const std::vector<int32_t> allowed = reference.allowed();
  for (size_t token = 0; token < logits.size(); ++token) {
    const bool ok = std::binary_search(allowed.begin(), allowed.end(), static_cast<int32_t>(token));
    CHECK(logits[token] == (ok ? 1.5f : -std::numeric_limits<float>::infinity()));
  }
  ChoiceListProcessor off(trie, shape, 0);
  CHECK_FALSE(off.advance(tiny.tokenizer.encode("zzz")[0]));
  CHECK(off.allowed().empty());
}

TEST_CASE("a catalogue of 100K tags compiles, and walks under it stay in it", "[choice][large]") {
  TinyModelWithTokenizer tiny;
  std::vector<std::string> tags;
  const std::vector<std::string> words = {"red", "blue", "summer", "winter",  "shoes", "dress",  "sale", "cat",
                                          "dog", "home", "garden", "kitchen", "sport", "travel", "book", "game"};
  for (int i = 0; tags.size() < 100000; ++i) {
    tags.push_back(words[i % 16] + " " + words[(i / 16) % 16] + " " + std::to_string(i / 256));
  }
  auto trie = ChoiceTrie::build(tiny.tokenizer, tags).value();
  CHECK(trie->num_choices() == 100000);
  const ChoiceListShape shape{5, tiny.tokenizer.encode("\n")[0], tiny.id("<|im_end|>")};
  std::mt19937 random(3);
  for (int walk = 0; walk < 20; ++walk) {
    ChoiceListProcessor processor(trie, shape, 0);
    std::vector<int32_t> generated;
    for (int step = 0; step < 400; ++step) {
      const std::vector<int32_t> allowed = processor.allowed();
      REQUIRE_FALSE(allowed.empty());
      const int32_t token = allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(random)];
      REQUIRE(processor.advance(token));
      if (token == shape.end) break;
      generated.push_back(token);
    }
    const ParsedChoiceList parsed = parse_choice_list(*trie, tiny.tokenizer.decode(generated));
    CHECK(parsed.unknown.empty());
    CHECK_FALSE(parsed.items.empty());
  }
}

TEST_CASE("the generator decoding under a choice list writes only catalogue choices", "[choice][generator]") {
  TinyModelWithTokenizer tiny;
  auto trie = ChoiceTrie::build(tiny.tokenizer, kCatalogue).value();
  GeneratorOptions options;
  options.kv_cache_bytes = 8 << 20;
  auto generator = Generator::create(*tiny.model, options).value();
  const int32_t end = tiny.id("<|im_end|>");
  std::vector<int64_t> ids;
  std::vector<std::shared_ptr<ChoiceListProcessor>> processors;
  for (int call = 0; call < 6; ++call) {
    GenerationRequest request;
    request.prompt = tiny.tokenizer.encode("tags for user " + std::to_string(call) + ":\n");
    request.max_new_tokens = 60;
    request.sampling.temperature = call == 0 ? 0.0f : 1.0f;
    request.sampling.seed = static_cast<uint64_t>(call);
    request.stop_tokens = {end};
    processors.push_back(std::make_shared<ChoiceListProcessor>(
        trie, ChoiceListShape{3, tiny.tokenizer.encode("\n")[0], end}, request.prompt.size()));
    request.logits_processor = processors.back();
    ids.push_back(generator->add(std::move(request)).value());
  }
  std::map<int64_t, std::vector<int32_t>> outputs;
  std::map<int64_t, FinishReason> finishes;
  for (int step = 0; step < 500 && !generator->idle(); ++step) {
    auto produced = generator->step();
    REQUIRE(produced.is_ok());
    for (const StepToken& token : *produced) {
      if (token.token >= 0 && token.token != end) outputs[token.sequence_id].push_back(token.token);
      if (token.finish != FinishReason::kNone) finishes[token.sequence_id] = token.finish;
    }
  }
  for (size_t call = 0; call < ids.size(); ++call) {
    INFO("call " << call << ": " << tiny.tokenizer.decode(outputs[ids[call]]));
    CHECK(finishes[ids[call]] == FinishReason::kStopToken);
    const ParsedChoiceList parsed = parse_choice_list(*trie, tiny.tokenizer.decode(outputs[ids[call]]));
    CHECK(parsed.unknown.empty());
    CHECK_FALSE(parsed.items.empty());
    CHECK(parsed.items.size() <= 3);
  }
  CHECK(generator->stats().constrained_steps > 0);
  CHECK(generator->stats().constraint_seconds > 0);
}

}  // namespace
}  // namespace recgpt

namespace recgpt {
namespace {

TEST_CASE("a catalogue's text parses as its file would, naming the source in errors", "[choice]") {
  TinyModelWithTokenizer tiny;
  auto trie = ChoiceTrie::parse(tiny.tokenizer, "red dress\n\n  shoes \r\nsale", "inline");
  REQUIRE(trie.is_ok());
  CHECK((*trie)->num_choices() == 3);
  auto bad = ChoiceTrie::parse(tiny.tokenizer, "ok\nx <|im_end|>", "inline");
  REQUIRE_FALSE(bad.is_ok());
  CHECK_THAT(bad.status().message(), Catch::Contains("inline:2"));
}

}  // namespace
}  // namespace recgpt
