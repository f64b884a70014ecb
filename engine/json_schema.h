// Structured output's shapes: a JSON Schema subset compiled to a graph of nodes that engine/json_matcher.h walks
// byte by byte. Every text the matcher accepts under a schema is an instance of it; the matcher writes a subset
// of the instances (canonical keys and enum values, listed keys in the schema's order), which is all generation
// needs.
//
// Supported keywords: type (a name or a list of names), properties, required, additionalProperties (false, true
// or a schema), items, minItems, maxItems, enum and const (of strings, numbers, booleans and null), $ref to "#",
// "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed), and the annotations title, description, $schema,
// $id, $comment, default, examples, which are ignored. Any other keyword is refused naming it and where it is
// (a JSON pointer): ignoring one such as `pattern` or `minLength` would let the output break the schema.
//
// An object with `properties` (or `required`) is written with those keys only, in the schema's order, the
// required ones always; one without takes any keys (none with additionalProperties false), each value under
// additionalProperties' schema.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace recgpt {

// Bits of JsonSchemaNode::types.
enum JsonType : uint8_t {
  kJsonObject = 1,
  kJsonArray = 2,
  kJsonString = 4,
  kJsonInteger = 8,
  kJsonNumber = 16,  // integers too
  kJsonBoolean = 32,
  kJsonNull = 64,
  kJsonAnyType = 127,
};

struct JsonSchemaNode {
  uint8_t types = kJsonAnyType;
  // Objects: the listed keys (each as JSON text with its quotes), their values' nodes, which are required.
  std::vector<std::string> keys = {};
  std::vector<uint16_t> key_nodes = {};
  std::vector<bool> required = {};
  // Objects without listed keys: the node of any key's value; -1 for none (only `{}`).
  int32_t additional = -1;
  // Arrays.
  uint16_t items = 0;
  uint32_t min_items = 0;
  uint32_t max_items = std::numeric_limits<uint32_t>::max();
  // The texts a value may be when it is not an object, array, string or number: the enum's values when
  // `is_enum` (then nothing else), else "true"/"false" for booleans, "null" for null.
  std::vector<std::string> literals = {};
  bool is_enum = false;
  // The fewest nesting levels (automaton frames, the value's own included) an instance takes as an object, as an
  // array, and of any kind: JsonSchema::kNoInstance when there is none (not that kind, or a required recursion).
  // The matcher opens a value only where its smallest instance still fits, so generation never dead-ends.
  uint32_t object_depth = 0;
  uint32_t array_depth = 0;
  uint32_t min_depth = 0;

  // The first listed key at or after `index` that is required, or keys.size().
  size_t next_required(size_t index) const;
};

class JsonSchema {
 public:
  static constexpr size_t kMaxNodes = 4096;
  static constexpr size_t kMaxKeys = 64;      // listed keys per object
  static constexpr size_t kMaxLiterals = 64;  // enum values per node
  static constexpr size_t kMaxLiteralBytes = 256;
  static constexpr size_t kMaxNesting = 64;          // levels of JSON in the schema's text
  static constexpr size_t kMaxObjectMembers = 4096;  // members of one of its objects
  // Automaton frames an instance may use (JsonMatcher: open objects and arrays and the innermost value).
  static constexpr uint32_t kMaxInstanceDepth = 32;
  static constexpr uint32_t kNoInstance = UINT32_MAX;

  // Any JSON object (OpenAI's response_format {"type": "json_object"}).
  static std::shared_ptr<const JsonSchema> any_object();
  // Compiles a schema given as JSON text. kInvalidArgument naming the keyword and its JSON pointer for a
  // malformed schema, an unsupported keyword or one past the limits above (its text nested deeper than
  // kMaxNesting included), or one with no instance within kMaxInstanceDepth (a required recursion has none).
  static Result<std::shared_ptr<const JsonSchema>> compile(std::string_view schema_json);

  const JsonSchemaNode& node(size_t index) const { return nodes_[index]; }
  size_t num_nodes() const { return nodes_.size(); }
  static constexpr uint16_t kRoot = 0;

 private:
  friend class JsonSchemaCompiler;
  std::vector<JsonSchemaNode> nodes_;
};

}  // namespace recgpt
