// Fuzz target: a response_format's JSON schema and the bytes a model writes under it. The input is a schema's
// text, a NUL byte, then the bytes (no NUL: the whole input is both). Any schema must compile or be refused
// with a message; under one that compiles (or, when it does not, under "any value"), the matcher takes bytes
// until it refuses one. Checks: the bytes accepted whole are JSON to nlohmann's parser; a refused byte leaves
// a restored snapshot's state exactly as it was; a state that is not a whole value accepts some byte (generation
// never dead-ends).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"
#include "engine/json_matcher.h"
#include "engine/json_schema.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recgpt;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string_view schema_text = input.substr(0, split);
  const std::string_view bytes = split == std::string_view::npos ? input : input.substr(split + 1);

  auto compiled = JsonSchema::compile(schema_text);
  if (!compiled.is_ok()) RECGPT_CHECK(!compiled.status().message().empty());
  const auto schema = compiled.is_ok() ? compiled.value() : JsonSchema::compile("{}").value();

  JsonMatcher matcher(schema);
  size_t accepted = 0;
  for (; accepted < bytes.size(); ++accepted) {
    std::string before;
    matcher.state_key(before);
    const JsonMatcher::Snapshot snapshot = matcher.save();
    if (matcher.feed(static_cast<uint8_t>(bytes[accepted]))) continue;
    matcher.restore(snapshot);
    std::string after;
    matcher.state_key(after);
    RECGPT_CHECK(before == after);
    break;
  }
  if (matcher.complete()) RECGPT_CHECK(nlohmann::json::accept(bytes.substr(0, accepted)));
  if (!matcher.complete()) {
    bool some_byte = false;
    for (int byte = 0; byte < 256 && !some_byte; ++byte)
      some_byte = JsonMatcher(matcher).feed(static_cast<uint8_t>(byte));
    RECGPT_CHECK(some_byte);
  }
  return 0;
}
