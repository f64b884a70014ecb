#include "common/hex.h"

#include <catch2/catch.hpp>

namespace recgpt {
namespace {

TEST_CASE("bytes survive the trip through hexadecimal text", "[common][hex]") {
  std::vector<std::byte> bytes;
  for (int value = 0; value < 256; ++value) bytes.push_back(static_cast<std::byte>(value));
  std::string text = to_hex(bytes);
  CHECK(text.substr(0, 8) == "00010203");
  CHECK(text.substr(text.size() - 4) == "feff");
  CHECK(from_hex(text).value() == bytes);
  CHECK(from_hex("A0ff").value() == std::vector<std::byte>{std::byte{0xa0}, std::byte{0xff}});
  CHECK(from_hex("").value().empty());
}

TEST_CASE("malformed hexadecimal text is refused", "[common][hex]") {
  CHECK(from_hex("abc").status().code() == StatusCode::kInvalidArgument);
  CHECK(from_hex("0g").status().code() == StatusCode::kInvalidArgument);
  CHECK(from_hex("0 ").status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recgpt
