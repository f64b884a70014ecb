// JSON text's shape measured without recursion: brackets and colons inside strings (escaped quotes included) do
// not count, and a deep or wide input stops the count at the limit.
#include "common/json_depth.h"

#include <catch2/catch.hpp>

namespace recgpt {
namespace {

TEST_CASE("json text depth counts arrays and objects outside strings", "[json_depth]") {
  CHECK(json_text_depth("1", 10) == 0);
  CHECK(json_text_depth("[]", 10) == 1);
  CHECK(json_text_depth(R"({"a": [1, {"b": []}]})", 10) == 4);
  CHECK(json_text_depth(R"({"a": "[[[[{{{{"})", 10) == 1);
  CHECK(json_text_depth(R"({"a": "\"[[[[", "b": [1]})", 10) == 2);
  CHECK(json_text_depth(R"(["\\", [[]]])", 10) == 3);
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  CHECK(json_text_depth(deep, 128) == 129);
  CHECK(json_text_depth(deep, 2000000) == 1000000);
}

TEST_CASE("json text shape counts an object's members outside strings and stops at the limit", "[json_depth]") {
  CHECK(json_text_shape(R"({"a": 1, "b": {"c": 2}, "d": [{"e": 1, "f": 2, "g": 3}]})", 10, 10).object_members == 3);
  CHECK(json_text_shape(R"({"a:b": "c:d", "e": "\":"})", 10, 10).object_members == 2);
  CHECK(json_text_shape("[1, 2, 3, 4]", 10, 2).object_members == 0);
  std::string wide = "{";
  for (int i = 0; i < 100000; ++i) wide += (i ? ",\"k" : "\"k") + std::to_string(i) + "\": 0";
  wide += "}";
  CHECK(json_text_shape(wide, 10, 4096).object_members == 4097);
  CHECK(json_text_shape(wide, 10, 1000000).object_members == 100000);
}

}  // namespace
}  // namespace recgpt
