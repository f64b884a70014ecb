#include "engine/bpe_trainer.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/tokenizer.h"

namespace recgpt {
namespace {

const std::vector<std::string> kSpecialTokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|entity|>"};

std::string sample_corpus() {
  std::string corpus;
  const char* lines[] = {
      "Lumen Trail ultralight tent, 1.3 kg, two doors. Because you bought a tent, we recommend merino socks.\n",
      "user=u_4821 event=view item=I100037 dwell_ms=5400\n",
      "用户浏览了三件商品，把一件加入购物车。推荐理由：经常一起购买。\n",
      "I'm sure they've liked it; we'll see. 😀👍🏽 <|im_start|>user\nhi<|im_end|>\n",
  };
  for (int repeat = 0; repeat < 20; ++repeat) {
    for (const char* line : lines) corpus += line;
    corpus += "order #" + std::to_string(10000 + repeat * 37) + " shipped to city " + std::to_string(repeat) + "\n";
  }
  return corpus;
}

TEST_CASE("the trained tokenizer.json loads with exactly vocab_size ids, special tokens last") {
  Result<std::string> json = train_byte_level_bpe(sample_corpus(), 450, kSpecialTokens);
  INFO(json.status().to_string());
  REQUIRE(json.is_ok());
  Result<Tokenizer> tokenizer = Tokenizer::from_json(json.value());
  REQUIRE(tokenizer.is_ok());
  CHECK(tokenizer->vocab_size() == 450);
  CHECK(tokenizer->token_to_id("<|endoftext|>") == 446);
  CHECK(tokenizer->token_to_id("<|entity|>") == 449);
  CHECK(tokenizer->is_special(449));
  CHECK(tokenizer->token_to_id("!") == 0);  // byte symbols in GPT-2 order
  CHECK(tokenizer->token_to_id("Ġ") == 220);

  nlohmann::json parsed = nlohmann::json::parse(json.value());
  CHECK(parsed["normalizer"]["type"] == "NFC");
  CHECK(parsed["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == std::string(kQwen2PreTokenizerPattern));
  CHECK(parsed["model"]["merges"].size() == 450 - 256 - 4);
}

TEST_CASE("training is deterministic") {
  std::string corpus = sample_corpus();
  Result<std::string> first = train_byte_level_bpe(corpus, 400, kSpecialTokens);
  Result<std::string> second = train_byte_level_bpe(corpus, 400, kSpecialTokens);
  REQUIRE(first.is_ok());
  REQUIRE(second.is_ok());
  CHECK(first.value() == second.value());
}

TEST_CASE("the trained tokenizer round-trips its corpus and compresses it") {
  std::string corpus = sample_corpus();
  Result<std::string> json = train_byte_level_bpe(corpus, 450, kSpecialTokens);
  REQUIRE(json.is_ok());
  Tokenizer tokenizer = Tokenizer::from_json(json.value()).value();
  std::vector<int32_t> ids = tokenizer.encode(corpus);
  CHECK(tokenizer.decode(ids) == corpus);
  CHECK(ids.size() * 3 < corpus.size());
  CHECK(tokenizer.encode("<|im_start|>") == std::vector<int32_t>{*tokenizer.token_to_id("<|im_start|>")});
}

TEST_CASE("the most frequent pair merges first and ties go to the smallest pair") {
  std::vector<std::string> no_specials;
  // Words "ab", "Ġab", "Ġcd": (a,b) occurs twice and merges first; then (c,d), (Ġ,ab) and (Ġ,c) occur once
  // each and go in pair order (byte ids: a=64, b=65, c=66, d=67, Ġ=220).
  Result<std::string> json = train_byte_level_bpe("ab ab cd", 259, no_specials);
  REQUIRE(json.is_ok());
  Tokenizer tokenizer = Tokenizer::from_json(json.value()).value();
  CHECK(tokenizer.token_to_id("ab") == 256);
  CHECK(tokenizer.token_to_id("cd") == 257);
  CHECK(tokenizer.token_to_id("Ġab") == 258);
}

TEST_CASE("the trainer refuses arguments it cannot honour") {
  std::vector<std::string> empty_token = {""};
  std::vector<std::string> repeated = {"<|a|>", "<|a|>"};
  CHECK(train_byte_level_bpe("abc", 259, empty_token).status().code() == StatusCode::kInvalidArgument);
  CHECK(train_byte_level_bpe("abc", 260, repeated).status().code() == StatusCode::kInvalidArgument);
  CHECK(train_byte_level_bpe("abc", 259, kSpecialTokens).status().code() == StatusCode::kInvalidArgument);
  Result<std::string> too_small = train_byte_level_bpe("abc", 4096, kSpecialTokens);
  CHECK(too_small.status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recgpt
