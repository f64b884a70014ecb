// The JSON automaton against an independent parser (nlohmann::json::accept): what it accepts whole is JSON,
// JSON within its limits is accepted, and schemas shape what it accepts. Schema compile errors name the keyword
// and where it is.
#include "engine/json_matcher.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

namespace recgpt {
namespace {

using nlohmann::json;

std::shared_ptr<const JsonSchema> schema_of(const std::string& text) {
  auto schema = JsonSchema::compile(text);
  INFO(text << ": " << (schema.is_ok() ? "" : schema.status().message()));
  REQUIRE(schema.is_ok());
  return std::move(schema).value();
}

// Whether `schema` accepts `text` as a whole instance.
bool accepts(const std::shared_ptr<const JsonSchema>& schema, std::string_view text) {
  JsonMatcher matcher(schema);
  return matcher.feed(text) && matcher.complete();
}

// A random JSON value of bounded depth, with strings over the whole Unicode range (no surrogates).
json random_value(std::mt19937& random, int depth) {
  const int kind = static_cast<int>(random() % (depth > 0 ? 8 : 6));
  switch (kind) {
    case 0: return nullptr;
    case 1: return random() % 2 == 0;
    case 2: return static_cast<int64_t>(random()) - (1LL << 31);
    case 3: return std::ldexp(static_cast<double>(random()) - 2e9, static_cast<int>(random() % 80) - 40);
    case 4:
    case 5: {
      std::string text;
      for (size_t n = random() % 8; n > 0; --n) {
        uint32_t code = random() % 4 == 0 ? random() % 0x110000 : 0x20 + random() % 0x60;
        if (code >= 0xD800 && code <= 0xDFFF) code = 'x';
        if (code < 0x80) {
          text += static_cast<char>(code);
        } else if (code < 0x800) {
          text += static_cast<char>(0xC0 | (code >> 6));
          text += static_cast<char>(0x80 | (code & 0x3F));
        } else if (code < 0x10000) {
          text += static_cast<char>(0xE0 | (code >> 12));
          text += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
          text += static_cast<char>(0x80 | (code & 0x3F));
        } else {
          text += static_cast<char>(0xF0 | (code >> 18));
          text += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
          text += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
          text += static_cast<char>(0x80 | (code & 0x3F));
        }
      }
      return text;
    }
    case 6: {
      json array = json::array();
      for (size_t n = random() % 4; n > 0; --n) array.push_back(random_value(random, depth - 1));
      return array;
    }
    default: {
      json object = json::object();
      for (size_t n = random() % 4; n > 0; --n)
        object[std::to_string(random() % 100)] = random_value(random, depth - 1);
      return object;
    }
  }
}

TEST_CASE("json matcher accepts JSON and refuses what is not JSON", "[json]") {
  const auto any = schema_of("{}");
  for (const char* text :
       {"{}", "[]", "0", "-0", "1.5e-3", "-12E+4", "true", "false", "null", R"("a\"b\\c\/\u00e9")",
        "{ \"a\" : [ 1 , 2 , { \"b\" : null } ] }", R"("\ud83d\ude00")", "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
        "{\"\":{}}", "[[[[]]]]", "1e99", "-0.5E-07", "123456789012345678901234567890"}) {
    INFO(text);
    CHECK(json::accept(text));
    CHECK(accepts(any, text));
  }
  for (const char* text : {"{",
                           "[1,]",
                           "{\"a\":1,}",
                           "01",
                           "1.",
                           ".5",
                           "-",
                           "1e",
                           "+1",
                           "tru",
                           "nul",
                           "\"a",
                           "{\"a\" 1}",
                           "{1:2}",
                           "[1 2]",
                           "\"\\x\"",
                           "\"\\u12G4\"",
                           "\"\x01\"",
                           "\"\xc3\"",
                           "\"\xc0\xaf\"",
                           "\"\xed\xa0\x80\"",
                           "\"\xf4\x90\x80\x80\"",
                           "\"\\ud800\"",
                           "\"\\udc00\"",
                           "\"\\ud800\\u0041\"",
                           "\"\\ud800x\"",
                           "{}{}",
                           "1 2",
                           "[1]]",
                           " {}",
                           "{} ",
                           "",
                           "   ",
                           "1e100",
                           "1e+999"}) {
    INFO(text);
    CHECK_FALSE(accepts(any, text));
  }
}

TEST_CASE("json matcher accepts random JSON and only JSON", "[json]") {
  const auto any = schema_of("true");
  std::mt19937 random(7);
  for (int round = 0; round < 2000; ++round) {
    const json value = random_value(random, 4);
    const int indent = static_cast<int>(random() % 3) - 1;
    const std::string text = value.dump(indent, ' ', /*ensure_ascii=*/random() % 2 == 0);
    INFO(text);
    REQUIRE(accepts(any, text));
    // A mutated text the matcher accepts must still be JSON.
    std::string mutated = text;
    const size_t at = random() % (text.size() + 1);
    const char byte = "{}[],:\"\\0123456789.eE-+ tfnul\x80\xc3"[random() % 31];
    switch (random() % 3) {
      case 0: mutated.insert(at, 1, byte); break;
      case 1:
        if (at < mutated.size()) mutated.erase(at, 1);
        break;
      default:
        if (at < mutated.size()) mutated[at] = byte;
    }
    INFO(mutated);
    if (accepts(any, mutated)) CHECK(json::accept(mutated));
  }
}

TEST_CASE("json matcher limits depth whitespace and numbers", "[json]") {
  const auto any = schema_of("{}");
  CHECK(accepts(any, std::string(JsonMatcher::kMaxDepth - 1, '[') + std::string(JsonMatcher::kMaxDepth - 1, ']')));
  CHECK_FALSE(
      accepts(any, std::string(JsonMatcher::kMaxDepth + 1, '[') + std::string(JsonMatcher::kMaxDepth + 1, ']')));
  const auto spaced = [](size_t spaces) { return std::string("[").append(spaces, ' ').append("1]"); };
  CHECK(accepts(any, spaced(JsonMatcher::kMaxWhitespaceRun)));
  CHECK_FALSE(accepts(any, spaced(JsonMatcher::kMaxWhitespaceRun + 1)));
  CHECK(accepts(any, std::string(JsonMatcher::kMaxNumberBytes, '1')));
  JsonMatcher long_number(any);  // one byte short of the limit: no '.' (it would need a digit after it)
  REQUIRE(long_number.feed(std::string(JsonMatcher::kMaxNumberBytes - 1, '1')));
  CHECK_FALSE(JsonMatcher(long_number).feed("."));
  CHECK(JsonMatcher(long_number).feed("2"));
  CHECK_FALSE(accepts(any, std::string(JsonMatcher::kMaxNumberBytes + 1, '1')));
  const auto integer = schema_of(R"({"type": "integer"})");
  const std::string digits(JsonMatcher::kMaxIntegerDigits, '9');
  CHECK(accepts(integer, digits));
  CHECK(accepts(integer, "-" + digits));
  CHECK_FALSE(accepts(integer, digits + "9"));
  CHECK_FALSE(accepts(integer, "-" + digits + "9"));
}

TEST_CASE("json matcher completes a root number only when whole", "[json]") {
  const auto any = schema_of("{}");
  JsonMatcher matcher(any);
  REQUIRE(matcher.feed("12"));
  CHECK(matcher.complete());
  CHECK_FALSE(matcher.finished());
  REQUIRE(matcher.feed("."));
  CHECK_FALSE(matcher.complete());
  REQUIRE(matcher.feed("5"));
  CHECK(matcher.complete());
  JsonMatcher object(JsonSchema::any_object());
  CHECK_FALSE(object.feed("1"));
  JsonMatcher closed(JsonSchema::any_object());
  REQUIRE(closed.feed("{}"));
  CHECK(closed.finished());
  CHECK_FALSE(closed.feed(" "));
}

TEST_CASE("json schemas shape what is accepted", "[json]") {
  const auto person = schema_of(R"({"type": "object", "properties": {"name": {"type": "string"},
      "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "bc", 3]}, "minItems": 1,
      "maxItems": 2}, "nick": {"type": ["string", "null"]}}, "required": ["name", "tags"]})");
  CHECK(accepts(person, R"({"name": "x", "age": 3, "tags": ["a"], "nick": null})"));
  CHECK(accepts(person, R"({"name":"x","tags":["bc",3]})"));
  CHECK(accepts(person, R"({"name":"x","tags":["a"],"nick":"y"})"));
  CHECK_FALSE(accepts(person, R"({"age": 3, "name": "x", "tags": ["a"]})"));    // listed order
  CHECK_FALSE(accepts(person, R"({"name": "x"})"));                             // tags required
  CHECK_FALSE(accepts(person, R"({"name": "x", "tags": []})"));                 // minItems
  CHECK_FALSE(accepts(person, R"({"name": "x", "tags": ["a", "a", "a"]})"));    // maxItems
  CHECK_FALSE(accepts(person, R"({"name": "x", "tags": ["b"]})"));              // enum
  CHECK_FALSE(accepts(person, R"({"name": "x", "age": 3.5, "tags": ["a"]})"));  // integer
  CHECK_FALSE(accepts(person, R"({"name": "x", "tags": ["a"], "other": 1})"));  // unlisted key
  CHECK_FALSE(accepts(person, R"({"name": 1, "tags": ["a"]})"));

  const auto numbers = schema_of(R"({"enum": [1, 12, 123]})");
  CHECK(accepts(numbers, "1"));
  CHECK(accepts(numbers, "12"));
  CHECK(accepts(numbers, "123"));
  CHECK_FALSE(accepts(numbers, "13"));
  const auto in_array = schema_of(R"({"type": "array", "items": {"enum": [1, 12]}})");
  CHECK(accepts(in_array, "[1,12,1]"));
  CHECK_FALSE(accepts(in_array, "[123]"));

  const auto tree = schema_of(R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
      "properties": {"value": {"type": "number"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["value"]}}})");
  CHECK(accepts(tree, R"({"value": 1, "children": [{"value": 2}, {"value": 3, "children": []}]})"));
  CHECK_FALSE(accepts(tree, R"({"value": 1, "children": [{"children": []}]})"));

  const auto optional = schema_of(R"({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"},
      {"type": "null"}], "default": null}, "b": {"type": "boolean"}}, "required": ["b"]})");
  CHECK(accepts(optional, R"({"a": null, "b": true})"));
  CHECK(accepts(optional, R"({"a": "s", "b": false})"));
  CHECK(accepts(optional, R"({"b": false})"));
  CHECK_FALSE(accepts(optional, R"({"a": 1, "b": false})"));
  CHECK_FALSE(accepts(optional, R"({"a": null})"));

  const auto closed = schema_of(R"({"type": "object", "additionalProperties": false})");
  CHECK(accepts(closed, "{}"));
  CHECK_FALSE(accepts(closed, R"({"a": 1})"));
  const auto map = schema_of(R"({"type": "object", "additionalProperties": {"type": "integer"}})");
  CHECK(accepts(map, R"({"a": 1, "b": 2})"));
  CHECK_FALSE(accepts(map, R"({"a": "1"})"));
}

TEST_CASE("json matcher opens no value it could not close within its depth", "[json]") {
  // Trees of any depth: at the limit, `{` is refused but the open arrays and objects still close.
  const auto tree = schema_of(R"({"$ref": "#/$defs/n", "$defs": {"n": {"type": "object",
      "properties": {"k": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}}})");
  JsonMatcher matcher(tree);
  int levels = 0;
  while (matcher.feed(R"({"k":[)")) ++levels;
  CHECK(levels * 2 == JsonMatcher::kMaxDepth);  // an object and an array a level
  JsonMatcher deepest(tree);  // the refused bytes left `matcher` unspecified: again, to the deepest state
  for (int i = 0; i < levels; ++i) REQUIRE(deepest.feed(R"({"k":[)"));
  for (int i = 0; i < levels; ++i) REQUIRE(deepest.feed("]}"));
  CHECK(deepest.finished());
  // A chain of required objects: its smallest instance must fit, or the schema is refused.
  const auto chain = [](int levels) {
    std::string schema = R"({"type": "integer"})";
    for (int i = 0; i < levels; ++i) {
      schema = R"({"type": "object", "properties": {"a": )" + schema + R"(}, "required": ["a"]})";
    }
    return schema;
  };
  CHECK(JsonSchema::compile(chain(JsonMatcher::kMaxDepth - 1)).is_ok());
  CHECK_FALSE(JsonSchema::compile(chain(JsonMatcher::kMaxDepth)).is_ok());
  // An optional key whose value cannot fit is not offered: the object closes instead.
  const auto optional = schema_of(R"({"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {
      "deep": {"$ref": "#/$defs/d"}, "next": {"$ref": "#/$defs/n"}}}, "d": )" +
                                  chain(8) + "}}");
  JsonMatcher walk(optional);
  int depth = 0;
  while (walk.feed(R"({"next":)")) ++depth;
  JsonMatcher at_limit(optional);
  for (int i = 0; i < depth; ++i) REQUIRE(at_limit.feed(R"({"next":)"));
  REQUIRE(at_limit.feed("{"));
  CHECK_FALSE(JsonMatcher(at_limit).feed(R"("deep":)"));
  CHECK(at_limit.feed("}"));
}

// The error of compiling `schema`, which must fail.
std::string compile_error(const std::string& schema) {
  auto compiled = JsonSchema::compile(schema);
  REQUIRE_FALSE(compiled.is_ok());
  return compiled.status().message();
}

TEST_CASE("json schema errors name the keyword and where it is", "[json]") {
  using Catch::Matchers::Contains;
  CHECK_THAT(compile_error(R"({"type": "string", "pattern": "a+"})"), Contains("'pattern'"));
  CHECK_THAT(compile_error(R"({"properties": {"a": {"minLength": 1}}})"), Contains("/properties/a"));
  CHECK_THAT(compile_error(R"({"type": "strin"})"), Contains("unknown type"));
  CHECK_THAT(compile_error(R"({"$ref": "#/$defs/missing"})"), Contains("names nothing"));
  CHECK_THAT(compile_error(R"({"$ref": "http://example.com/s"})"), Contains("only references inside"));
  CHECK_THAT(compile_error(R"({"anyOf": [{"type": "integer"}, {"type": "number"}]})"), Contains("shares a type"));
  CHECK_THAT(compile_error(R"({"enum": [{"a": 1}]})"), Contains("object and array"));
  CHECK_THAT(compile_error(R"({"type": "array", "minItems": 3, "maxItems": 2})"), Contains("minItems"));
  CHECK_THAT(compile_error(R"({"type": "integer", "enum": ["a"]})"), Contains("no value"));
  CHECK_THAT(compile_error("{not json"), Contains("not valid JSON"));
  CHECK_THAT(compile_error("false"), Contains("allows no value"));
  CHECK_THAT(compile_error(R"({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}})"), Contains("$ref"));
  CHECK_THAT(compile_error(R"({"$ref": "#/$defs/n", "$defs": {"n": {"type": "object",
      "properties": {"child": {"$ref": "#/$defs/n"}}, "required": ["child"]}}})"),
             Contains("no finite instance"));
}

}  // namespace
}  // namespace recgpt
