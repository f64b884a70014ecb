#include "engine/tokenizer.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/bpe_trainer.h"
#include "engine/tokenizer_byte_level.h"

namespace recgpt {
namespace {

using Json = nlohmann::json;
using Ids = std::vector<int32_t>;

constexpr int32_t kEndOfText = 1000;
constexpr int32_t kImStart = 1001;
constexpr int32_t kImEnd = 1002;

Json byte_level() {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
}

Json special_token(int32_t id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

// A Qwen2-shaped tokenizer whose byte symbol ids are the byte values, with merges making
// he=256, ll=257, hell=258, hello=259, Ġhello=260, bc=261, ab=262.
Json tiny_tokenizer() {
  Json vocab = Json::object();
  for (int byte = 0; byte < 256; ++byte) vocab[bytes_to_byte_level(std::string(1, static_cast<char>(byte)))] = byte;
  std::vector<std::string> merged = {"he", "ll", "hell", "hello", "Ġhello", "bc", "ab"};
  for (size_t index = 0; index < merged.size(); ++index) vocab[merged[index]] = 256 + static_cast<int>(index);
  Json split = {{"type", "Split"},
                {"pattern", {{"Regex", std::string(kQwen2PreTokenizerPattern)}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens",
           {special_token(kEndOfText, "<|endoftext|>"), special_token(kImStart, "<|im_start|>"),
            special_token(kImEnd, "<|im_end|>")}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {split, byte_level()}}}},
          {"post_processor", byte_level()},
          {"decoder", byte_level()},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"vocab", vocab},
            {"merges", {"h e", "l l", "he ll", "hell o", "Ġ hello", "b c", "a b"}}}}};
}

Tokenizer load(const Json& json) {
  Result<Tokenizer> tokenizer = Tokenizer::from_json(json.dump());
  INFO(tokenizer.status().to_string());
  REQUIRE(tokenizer.is_ok());
  return tokenizer.value();
}

StatusCode load_error(const Json& json) {
  Result<Tokenizer> tokenizer = Tokenizer::from_json(json.dump());
  REQUIRE_FALSE(tokenizer.is_ok());
  return tokenizer.status().code();
}

Ids ids_of_bytes(std::string_view bytes) {
  Ids ids;
  for (char byte : bytes) ids.push_back(static_cast<uint8_t>(byte));
  return ids;
}

TEST_CASE("a hand-built tokenizer merges bytes into the known token ids") {
  Tokenizer tokenizer = load(tiny_tokenizer());
  CHECK(tokenizer.encode("hello") == Ids{259});
  CHECK(tokenizer.encode("hello hello") == Ids{259, 260});
  CHECK(tokenizer.encode("help") == Ids{256, 'l', 'p'});
  CHECK(tokenizer.encode("") == Ids{});
  CHECK(tokenizer.vocab_size() == 1003);
  CHECK(tokenizer.token_to_id("Ġhello") == 260);
  CHECK(tokenizer.id_to_token(260) == "Ġhello");
  CHECK(tokenizer.token_bytes(260) == " hello");
  CHECK_FALSE(tokenizer.token_to_id("nope").has_value());
  CHECK_FALSE(tokenizer.id_to_token(999).has_value());
}

TEST_CASE("merges apply by rank, not from left to right") {
  // "b c" outranks "a b", so "abc" becomes a + bc even though "ab" comes first in the text.
  Tokenizer tokenizer = load(tiny_tokenizer());
  CHECK(tokenizer.encode("abc") == Ids{'a', 261});
  CHECK(tokenizer.encode("abab") == Ids{262, 262});
}

TEST_CASE("merges written as pairs load the same as merges written as strings") {
  Json json = tiny_tokenizer();
  Json pairs = Json::array();
  for (const Json& merge : json["model"]["merges"]) {
    std::string text = merge.get<std::string>();
    size_t space = text.find(' ');
    pairs.push_back({text.substr(0, space), text.substr(space + 1)});
  }
  json["model"]["merges"] = pairs;
  CHECK(load(json).encode("hello hello abc") == load(tiny_tokenizer()).encode("hello hello abc"));
}

TEST_CASE("special tokens in text are split out before pre-tokenization") {
  Tokenizer tokenizer = load(tiny_tokenizer());
  CHECK(tokenizer.encode("<|im_start|>hello<|im_end|>") == Ids{kImStart, 259, kImEnd});
  CHECK(tokenizer.encode("x<|endoftext|>y") == Ids{'x', kEndOfText, 'y'});
  // Incomplete or nested markers stay text.
  Ids partial = tokenizer.encode("<|im_start");
  CHECK(std::find(partial.begin(), partial.end(), kImStart) == partial.end());
  CHECK(tokenizer.encode("<<|im_end|>>") == Ids{'<', kImEnd, '>'});
  CHECK(tokenizer.is_special(kImEnd));
  CHECK_FALSE(tokenizer.is_special(259));
}

TEST_CASE("the longest added token wins where several start at the same place") {
  Json json = tiny_tokenizer();
  json["added_tokens"].push_back({{"id", 1003}, {"content", "hel"}, {"special", false}, {"normalized", false}});
  json["added_tokens"].push_back({{"id", 1004}, {"content", "hello w"}, {"special", false}, {"normalized", false}});
  Tokenizer tokenizer = load(json);
  CHECK(tokenizer.encode("hello world") == Ids{1004, 'o', 'r', 'l', 'd'});
  CHECK(tokenizer.encode("help") == Ids{1003, 'p'});
}

TEST_CASE("lstrip and rstrip added tokens swallow the white space beside them") {
  Json json = tiny_tokenizer();
  json["added_tokens"].push_back(
      {{"id", 1003}, {"content", "<mask>"}, {"special", true}, {"lstrip", true}, {"rstrip", true}});
  Tokenizer tokenizer = load(json);
  CHECK(tokenizer.encode("a  <mask>  b") == Ids{'a', 1003, 'b'});
}

TEST_CASE("single_word added tokens match only when no word character touches them") {
  Json json = tiny_tokenizer();
  json["added_tokens"].push_back({{"id", 1003}, {"content", "cat"}, {"special", false}, {"single_word", true}});
  Tokenizer tokenizer = load(json);
  CHECK(tokenizer.encode("cat") == Ids{1003});
  CHECK(tokenizer.encode("a cat.") == Ids{'a', ' ', 1003, '.'});
  CHECK(tokenizer.encode("concat") == ids_of_bytes("concat"));
}

TEST_CASE("the NFC normalizer composes text before BPE") {
  Json json = tiny_tokenizer();
  json["normalizer"] = {{"type", "NFC"}};
  Tokenizer tokenizer = load(json);
  CHECK(tokenizer.encode("e\xCC\x81") == ids_of_bytes("\xC3\xA9"));  // e + U+0301 -> U+00E9
  CHECK(tokenizer.decode(tokenizer.encode("cafe\xCC\x81")) == "caf\xC3\xA9");
}

TEST_CASE("ByteLevel with use_regex splits with GPT-2's pattern and can add a prefix space") {
  Json json = tiny_tokenizer();
  json["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  Tokenizer tokenizer = load(json);
  CHECK(tokenizer.encode("hello hello") == Ids{260, 260});
  CHECK(tokenizer.encode("hello's") == Ids{260, '\'', 's'});
}

TEST_CASE("ignore_merges takes a whole-word vocab token without merging") {
  Json json = tiny_tokenizer();
  json["model"]["vocab"]["xyz"] = 263;
  CHECK(load(json).encode("xyz") == Ids{'x', 'y', 'z'});
  json["model"]["ignore_merges"] = true;
  CHECK(load(json).encode("xyz") == Ids{263});
}

TEST_CASE("bytes missing from the vocab become the unk token, fused when asked") {
  Json json = tiny_tokenizer();
  Json& vocab = json["model"]["vocab"];
  vocab.erase(bytes_to_byte_level("\xE4"));
  vocab.erase(bytes_to_byte_level("\xBD"));
  vocab["<unk>"] = 263;
  json["model"]["unk_token"] = "<unk>";
  CHECK(load(json).encode("a\xE4\xBD\xA0") == Ids{'a', 263, 263, 0xA0});
  json["model"]["fuse_unk"] = true;
  CHECK(load(json).encode("a\xE4\xBD\xA0") == Ids{'a', 263, 0xA0});
}

TEST_CASE("decode of encode gives back tricky text") {
  Tokenizer tokenizer = load(tiny_tokenizer());
  const char* texts[] = {
      "hello world",
      "  leading and trailing  ",
      "tabs\t\tand\r\nnewlines\n\n",
      "digits 1234567890",
      "I'm sure they've said we'll",
      "\xE4\xBD\xA0\xE5\xA5\xBD",                                                  // 你好
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",  // family ZWJ sequence
      "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",                                          // thumbs up, skin tone
      "<|im_start|>user\nhi<|im_end|>",
      "",
  };
  for (const char* text : texts) {
    INFO(text);
    CHECK(tokenizer.decode(tokenizer.encode(text)) == text);
  }
}

TEST_CASE("invalid UTF-8 in the input is encoded as U+FFFD without failing") {
  Tokenizer tokenizer = load(tiny_tokenizer());
  CHECK(tokenizer.encode("a\xFF"
                         "b") == tokenizer.encode("a\xEF\xBF\xBD"
                                                  "b"));
  CHECK(tokenizer.encode("\xE4\xBD") == tokenizer.encode("\xEF\xBF\xBD"));  // truncated sequence: one U+FFFD
  CHECK(tokenizer.decode(tokenizer.encode("x\xC0\xAFy")) == "x\xEF\xBF\xBD\xEF\xBF\xBDy");
}

TEST_CASE("decode skips unknown ids, and special tokens when asked") {
  Tokenizer tokenizer = load(tiny_tokenizer());
  CHECK(tokenizer.decode(Ids{259, 999, -5, 1 << 30}) == "hello");
  CHECK(tokenizer.decode(Ids{kImStart, 259, kImEnd}) == "<|im_start|>hello<|im_end|>");
  CHECK(tokenizer.decode(Ids{kImStart, 259, kImEnd}, /*skip_special_tokens=*/true) == "hello");
  // A lone byte of a multi-byte sequence decodes to U+FFFD.
  CHECK(tokenizer.decode(Ids{0xE4, 'a'}) ==
        "\xEF\xBF\xBD"
        "a");
}

TEST_CASE("the streaming detokenizer holds back a character split across tokens") {
  Tokenizer tokenizer = load(tiny_tokenizer());
  StreamingDetokenizer stream(tokenizer);
  CHECK(stream.push(259) == "hello");
  CHECK(stream.push(0xE4).empty());
  CHECK(stream.push(0xBD).empty());
  CHECK(stream.push(0xA0) == "\xE4\xBD\xA0");
  CHECK(stream.push(0xF0).empty());
  CHECK(stream.push('!') == "\xEF\xBF\xBD!");  // the sequence broke: U+FFFD, then the new byte
  CHECK(stream.push(0xE4).empty());
  CHECK(stream.finish() == "\xEF\xBF\xBD");
  CHECK(stream.finish().empty());
}

TEST_CASE("streamed text equals decode of the same ids") {
  Tokenizer tokenizer = load(tiny_tokenizer());
  Ids ids = tokenizer.encode("hello \xE4\xBD\xA0\xF0\x9F\x98\x80 <|im_end|> abc");
  ids.insert(ids.begin() + 3, 0xF0);  // a stray lead byte in the middle
  for (bool skip_special : {false, true}) {
    StreamingDetokenizer stream(tokenizer, skip_special);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.finish();
    CHECK(streamed == tokenizer.decode(ids, skip_special));
  }
}

TEST_CASE("malformed tokenizer.json gives data_loss") {
  for (std::string_view text : {"", "{", "[1, 2]", "{\"model\": 3}", "not json"}) {
    INFO(text);
    Result<Tokenizer> tokenizer = Tokenizer::from_json(text);
    REQUIRE_FALSE(tokenizer.is_ok());
    CHECK(tokenizer.status().code() == StatusCode::kDataLoss);
  }
  Json json = tiny_tokenizer();
  json.erase("model");
  CHECK(load_error(json) == StatusCode::kDataLoss);
  json = tiny_tokenizer();
  json["model"].erase("vocab");
  CHECK(load_error(json) == StatusCode::kDataLoss);
  json = tiny_tokenizer();
  json["model"]["merges"].push_back("q z");  // "qz" is not in the vocab
  CHECK(load_error(json) == StatusCode::kDataLoss);
  json = tiny_tokenizer();
  json["model"]["merges"].push_back("a b c");
  CHECK(load_error(json) == StatusCode::kDataLoss);
  json = tiny_tokenizer();
  json["model"]["vocab"]["neg"] = -1;
  CHECK(load_error(json) == StatusCode::kDataLoss);
  json = tiny_tokenizer();
  json["added_tokens"][0]["id"] = "seven";
  CHECK(load_error(json) == StatusCode::kDataLoss);
  json = tiny_tokenizer();
  json["added_tokens"][0]["content"] = "";
  CHECK(load_error(json) == StatusCode::kDataLoss);
}

TEST_CASE("unsupported tokenizer features give unimplemented") {
  auto with = [](const char* key, Json value) {
    Json json = tiny_tokenizer();
    json[key] = std::move(value);
    return json;
  };
  Json word_piece = tiny_tokenizer();
  word_piece["model"]["type"] = "WordPiece";
  CHECK(load_error(word_piece) == StatusCode::kUnimplemented);
  Json byte_fallback = tiny_tokenizer();
  byte_fallback["model"]["byte_fallback"] = true;
  CHECK(load_error(byte_fallback) == StatusCode::kUnimplemented);
  CHECK(load_error(with("normalizer", {{"type", "NFKC"}})) == StatusCode::kUnimplemented);
  CHECK(load_error(with("pre_tokenizer", {{"type", "Whitespace"}})) == StatusCode::kUnimplemented);
  CHECK(load_error(with("pre_tokenizer", nullptr)) == StatusCode::kUnimplemented);
  CHECK(load_error(with("decoder", nullptr)) == StatusCode::kUnimplemented);
  CHECK(load_error(with("post_processor", {{"type", "TemplateProcessing"}})) == StatusCode::kUnimplemented);
  CHECK(load_error(with("truncation", {{"max_length", 8}})) == StatusCode::kUnimplemented);
  Json removed = tiny_tokenizer();
  removed["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  CHECK(load_error(removed) == StatusCode::kUnimplemented);
}

TEST_CASE("a pre-tokenizer pattern that does not compile gives invalid_argument") {
  Json json = tiny_tokenizer();
  json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  CHECK(load_error(json) == StatusCode::kInvalidArgument);
}

TEST_CASE("loading a missing tokenizer.json gives not_found") {
  Result<Tokenizer> tokenizer = Tokenizer::load("/nonexistent/recgpt/tokenizer.json");
  REQUIRE_FALSE(tokenizer.is_ok());
  CHECK(tokenizer.status().code() == StatusCode::kNotFound);
}

}  // namespace
}  // namespace recgpt
