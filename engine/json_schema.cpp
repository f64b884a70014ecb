#include "engine/json_schema.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/json_depth.h"

namespace recgpt {
namespace {

// ordered_json keeps an object's keys in the text's order: listed keys are written in the schema's order.
using json = nlohmann::ordered_json;

// Keywords that say nothing about which instances are valid.
const std::set<std::string, std::less<>> kAnnotations = {"title",       "description", "$schema",   "$id",
                                                         "$comment",    "default",     "examples",  "$defs",
                                                         "definitions", "readOnly",    "writeOnly", "deprecated"};

constexpr struct {
  const char* name;
  uint8_t bit;
} kTypeNames[] = {{"object", kJsonObject},   {"array", kJsonArray},   {"string", kJsonString},
                  {"integer", kJsonInteger}, {"number", kJsonNumber}, {"boolean", kJsonBoolean},
                  {"null", kJsonNull}};

std::string escape_pointer_token(const std::string& token) {
  std::string escaped;
  for (char c : token) {
    if (c == '~')
      escaped += "~0";
    else if (c == '/')
      escaped += "~1";
    else
      escaped += c;
  }
  return escaped;
}

std::string where(const std::string& pointer) { return pointer.empty() ? "the schema's root" : "'" + pointer + "'"; }

// The JSON type bit of an enum value; 0 for objects and arrays.
uint8_t literal_type(const json& value) {
  if (value.is_string()) return kJsonString;
  if (value.is_boolean()) return kJsonBoolean;
  if (value.is_null()) return kJsonNull;
  if (value.is_number_integer() || value.is_number_unsigned()) return kJsonInteger;
  if (value.is_number_float()) {
    const double number = value.get<double>();
    return number == static_cast<double>(static_cast<int64_t>(number)) ? kJsonInteger : kJsonNumber;
  }
  return 0;
}

bool type_allows(uint8_t types, uint8_t literal) {
  if (literal == kJsonInteger) return (types & (kJsonInteger | kJsonNumber)) != 0;
  return (types & literal) != 0;
}

}  // namespace

size_t JsonSchemaNode::next_required(size_t index) const {
  while (index < keys.size() && !required[index]) ++index;
  return index;
}

class JsonSchemaCompiler {
 public:
  explicit JsonSchemaCompiler(const json& root) : root_(root), schema_(std::make_shared<JsonSchema>()) {}

  Result<std::shared_ptr<const JsonSchema>> run() {
    // The root is node 0 (JsonSchema::kRoot), also when it only refers elsewhere.
    const json* root = &root_;
    std::string pointer;
    for (int hops = 0; root->is_object() && root->contains("$ref"); ++hops) {
      if (hops > 16) return invalid_argument("the schema's root is a chain of more than 16 $refs");
      RECGPT_RETURN_IF_ERROR(check_ref_alone(*root, pointer));
      RECGPT_ASSIGN_OR_RETURN(std::string target, ref_target((*root)["$ref"], pointer + "/$ref"));
      refs_[target] = 0;
      pointer = target;
      root = lookup(target);
      if (root == nullptr) return invalid_argument("$ref '" + target + "' names nothing in the schema");
    }
    refs_[""] = 0;
    RECGPT_ASSIGN_OR_RETURN(uint16_t root_index, new_node());
    in_progress_.insert(root_index);
    RECGPT_RETURN_IF_ERROR(fill(root_index, *root, pointer));
    in_progress_.erase(root_index);
    measure_depths();
    const uint32_t root_depth = nodes()[JsonSchema::kRoot].min_depth;
    if (root_depth == JsonSchema::kNoInstance) {
      return invalid_argument("the schema has no finite instance (a recursion through required keys or items)");
    }
    if (root_depth > JsonSchema::kMaxInstanceDepth) {
      return invalid_argument("the schema's smallest instance nests " + std::to_string(root_depth) +
                              " levels deep, more than " + std::to_string(JsonSchema::kMaxInstanceDepth));
    }
    return std::shared_ptr<const JsonSchema>(std::move(schema_));
  }

 private:
  std::vector<JsonSchemaNode>& nodes() { return schema_->nodes_; }

  Result<uint16_t> new_node() {
    if (nodes().size() >= JsonSchema::kMaxNodes) {
      return invalid_argument("the schema has more than " + std::to_string(JsonSchema::kMaxNodes) + " subschemas");
    }
    nodes().emplace_back();
    return static_cast<uint16_t>(nodes().size() - 1);
  }

  // A node any value matches, made once.
  Result<uint16_t> any_node() {
    if (any_ < 0) {
      RECGPT_ASSIGN_OR_RETURN(uint16_t index, new_node());
      any_ = index;
      JsonSchemaNode& node = nodes()[index];
      node.additional = index;
      node.items = index;
      add_type_literals(node);
    }
    return static_cast<uint16_t>(any_);
  }

  static void add_type_literals(JsonSchemaNode& node) {
    if (node.is_enum) return;
    if (node.types & kJsonBoolean) node.literals.insert(node.literals.end(), {"true", "false"});
    if (node.types & kJsonNull) node.literals.emplace_back("null");
  }

  // Each node's smallest instance depths, by relaxation from "none" (a recursion stays none unless a branch ends
  // it): values only fall, so at most one pass per node.
  void measure_depths() {
    constexpr uint32_t kNone = JsonSchema::kNoInstance;
    const auto plus_one = [](uint32_t depth) { return depth == kNone ? kNone : depth + 1; };
    for (JsonSchemaNode& node : nodes()) node.object_depth = node.array_depth = node.min_depth = kNone;
    for (size_t pass = 0; pass <= nodes().size(); ++pass) {
      bool changed = false;
      for (JsonSchemaNode& node : nodes()) {
        uint32_t object = kNone;
        if (node.types & kJsonObject) {
          object = 1;
          for (size_t key = 0; key < node.keys.size(); ++key) {
            if (node.required[key]) object = std::max(object, plus_one(nodes()[node.key_nodes[key]].min_depth));
          }
        }
        uint32_t array = kNone;
        if (node.types & kJsonArray) array = node.min_items == 0 ? 1 : plus_one(nodes()[node.items].min_depth);
        const bool scalar = node.is_enum || (node.types & ~(kJsonObject | kJsonArray)) != 0;
        const uint32_t any = std::min({scalar ? 1u : kNone, object, array});
        changed = changed || object != node.object_depth || array != node.array_depth || any != node.min_depth;
        node.object_depth = object;
        node.array_depth = array;
        node.min_depth = any;
      }
      if (!changed) return;
    }
  }

  // The canonical "#/..." form of a $ref; only local references are supported.
  Result<std::string> ref_target(const json& ref, const std::string& pointer) {
    if (!ref.is_string()) return invalid_argument("$ref at " + where(pointer) + " is not a string");
    const std::string text = ref.get<std::string>();
    if (text == "#") return std::string();
    if (text.rfind("#/", 0) != 0) {
      return unimplemented("$ref '" + text + "' at " + where(pointer) +
                           ": only references inside the schema ('#/...')");
    }
    return text.substr(1);
  }

  const json* lookup(const std::string& pointer) const {
    try {
      const json::json_pointer path(pointer);
      return root_.contains(path) ? &root_.at(path) : nullptr;
    } catch (const json::exception&) {
      return nullptr;
    }
  }

  Status check_ref_alone(const json& schema, const std::string& pointer) {
    for (const auto& [key, value] : schema.items()) {
      if (key != "$ref" && kAnnotations.count(key) == 0) {
        return unimplemented("'" + key + "' next to $ref at " + where(pointer) + " (a $ref must stand alone)");
      }
    }
    return Status::ok();
  }

  // The node of the subschema `schema` at `pointer`.
  Result<uint16_t> compile(const json& schema, const std::string& pointer) {
    if (schema.is_object() && schema.contains("$ref")) {
      RECGPT_RETURN_IF_ERROR(check_ref_alone(schema, pointer));
      RECGPT_ASSIGN_OR_RETURN(std::string target, ref_target(schema["$ref"], pointer + "/$ref"));
      if (auto known = refs_.find(target); known != refs_.end()) return known->second;
      if (++ref_depth_ > 64) return invalid_argument("$refs nest more than 64 deep at " + where(pointer));
      const json* resolved = lookup(target);
      if (resolved == nullptr)
        return invalid_argument("$ref '#" + target + "' at " + where(pointer) + " names nothing");
      RECGPT_ASSIGN_OR_RETURN(uint16_t index, compile_new(*resolved, target, &target));
      --ref_depth_;
      return index;
    }
    return compile_new(schema, pointer, nullptr);
  }

  Result<uint16_t> compile_new(const json& schema, const std::string& pointer, const std::string* ref) {
    if (schema.is_object() && schema.contains("$ref")) return compile(schema, pointer);  // a $ref to a $ref
    RECGPT_ASSIGN_OR_RETURN(uint16_t index, new_node());
    if (ref != nullptr) refs_[*ref] = index;
    in_progress_.insert(index);
    RECGPT_RETURN_IF_ERROR(fill(index, schema, pointer));
    in_progress_.erase(index);
    return index;
  }

  Status fill(uint16_t index, const json& schema, const std::string& pointer) {
    if (schema.is_boolean()) {
      if (!schema.get<bool>()) return invalid_argument("the schema 'false' at " + where(pointer) + " allows no value");
      return fill_defaults(index);
    }
    if (!schema.is_object()) return invalid_argument("the schema at " + where(pointer) + " is not an object");
    for (const auto& [key, value] : schema.items()) {
      if (kAnnotations.count(key) == 0 && kKeywords.count(key) == 0) {
        return unimplemented("keyword '" + key + "' at " + where(pointer) + " is not supported");
      }
    }
    for (const char* combinator : {"anyOf", "oneOf"}) {
      if (schema.contains(combinator)) return fill_union(index, schema, pointer, combinator);
    }
    uint8_t types = 0;
    if (auto type = schema.find("type"); type != schema.end()) {
      RECGPT_ASSIGN_OR_RETURN(types, parse_types(*type, pointer + "/type"));
    } else {
      for (const char* key : {"properties", "required", "additionalProperties"}) {
        if (schema.contains(key)) types |= kJsonObject;
      }
      for (const char* key : {"items", "minItems", "maxItems"}) {
        if (schema.contains(key)) types |= kJsonArray;
      }
      if (types == 0) types = kJsonAnyType;
    }
    nodes()[index].types = types;
    if (schema.contains("enum") || schema.contains("const")) {
      if (schema.contains("enum") && schema.contains("const")) {
        return unimplemented("'enum' and 'const' together at " + where(pointer));
      }
      RECGPT_RETURN_IF_ERROR(fill_enum(index, schema, pointer));
      types = nodes()[index].types;  // the values' types
    }
    if (types & kJsonObject) RECGPT_RETURN_IF_ERROR(fill_object(index, schema, pointer));
    if (types & kJsonArray) RECGPT_RETURN_IF_ERROR(fill_array(index, schema, pointer));
    return fill_defaults(index);
  }

  // Objects and arrays with nothing said of their contents take anything.
  Status fill_defaults(uint16_t index) {
    RECGPT_ASSIGN_OR_RETURN(uint16_t any, any_node());
    JsonSchemaNode& node = nodes()[index];
    if (has_object_info_.count(index) == 0) node.additional = any;
    if (has_items_.count(index) == 0) node.items = any;
    add_type_literals(node);
    return Status::ok();
  }

  Result<uint8_t> parse_types(const json& type, const std::string& pointer) {
    const auto one = [&](const json& name) -> Result<uint8_t> {
      if (name.is_string()) {
        for (const auto& known : kTypeNames) {
          if (name.get<std::string>() == known.name) return known.bit;
        }
      }
      return invalid_argument("'" + pointer + "': unknown type " + name.dump());
    };
    if (!type.is_array()) return one(type);
    if (type.empty()) return invalid_argument("'" + pointer + "' is an empty list of types");
    uint8_t types = 0;
    for (const json& name : type) {
      RECGPT_ASSIGN_OR_RETURN(uint8_t bit, one(name));
      types |= bit;
    }
    return types;
  }

  Status fill_enum(uint16_t index, const json& schema, const std::string& pointer) {
    const bool is_const = schema.contains("const");
    const std::string at = pointer + (is_const ? "/const" : "/enum");
    const json values = is_const ? json::array({schema["const"]}) : schema["enum"];
    if (!values.is_array() || values.empty()) return invalid_argument("'" + at + "' is not a non-empty list");
    JsonSchemaNode& node = nodes()[index];
    const bool typed = schema.contains("type");
    const uint8_t types_before = node.types;
    for (const json& value : values) {
      const uint8_t type = literal_type(value);
      if (type == 0) return unimplemented("'" + at + "': object and array values are not supported");
      if (typed && !type_allows(node.types, type)) continue;
      std::string text = value.dump();
      if (text.size() > JsonSchema::kMaxLiteralBytes) {
        return invalid_argument("'" + at + "': a value longer than " + std::to_string(JsonSchema::kMaxLiteralBytes) +
                                " bytes");
      }
      if (std::find(node.literals.begin(), node.literals.end(), text) == node.literals.end()) {
        node.literals.push_back(std::move(text));
      }
    }
    if (node.literals.empty()) return invalid_argument("'" + at + "': no value has the schema's type");
    node.types = 0;
    for (const json& value : values) {
      if (!typed || type_allows(types_before, literal_type(value))) node.types |= literal_type(value);
    }
    if (node.literals.size() > JsonSchema::kMaxLiterals) {
      return unimplemented("'" + at + "' has more than " + std::to_string(JsonSchema::kMaxLiterals) + " values");
    }
    node.is_enum = true;
    return Status::ok();
  }

  Status fill_object(uint16_t index, const json& schema, const std::string& pointer) {
    std::vector<std::string> names;
    std::vector<uint16_t> value_nodes;
    if (auto properties = schema.find("properties"); properties != schema.end()) {
      if (!properties->is_object()) return invalid_argument("'" + pointer + "/properties' is not an object");
      if (properties->size() > JsonSchema::kMaxKeys) {
        return unimplemented("'" + pointer + "/properties' lists more than " + std::to_string(JsonSchema::kMaxKeys) +
                             " keys");
      }
      for (const auto& [name, value_schema] : properties->items()) {
        RECGPT_ASSIGN_OR_RETURN(uint16_t value,
                                compile(value_schema, pointer + "/properties/" + escape_pointer_token(name)));
        names.push_back(name);
        value_nodes.push_back(value);
      }
    }
    std::vector<bool> required(names.size(), false);
    if (auto listed = schema.find("required"); listed != schema.end()) {
      if (!listed->is_array()) return invalid_argument("'" + pointer + "/required' is not a list");
      for (const json& name : *listed) {
        if (!name.is_string()) return invalid_argument("'" + pointer + "/required' holds a non-string");
        auto at = std::find(names.begin(), names.end(), name.get<std::string>());
        if (at == names.end()) {  // required but not described: any value
          if (names.size() >= JsonSchema::kMaxKeys) {
            return unimplemented("'" + pointer + "' lists more than " + std::to_string(JsonSchema::kMaxKeys) + " keys");
          }
          RECGPT_ASSIGN_OR_RETURN(uint16_t any, any_node());
          names.push_back(name.get<std::string>());
          value_nodes.push_back(any);
          required.push_back(true);
        } else {
          required[static_cast<size_t>(at - names.begin())] = true;
        }
      }
    }
    JsonSchemaNode& node = nodes()[index];
    for (size_t i = 0; i < names.size(); ++i) node.keys.push_back(json(names[i]).dump());
    node.key_nodes = std::move(value_nodes);
    node.required = std::move(required);
    has_object_info_.insert(index);
    node.additional = -1;
    if (!node.keys.empty()) return Status::ok();  // only the listed keys are written
    auto additional = schema.find("additionalProperties");
    if (additional == schema.end() || (additional->is_boolean() && additional->get<bool>())) {
      RECGPT_ASSIGN_OR_RETURN(uint16_t any, any_node());
      nodes()[index].additional = any;
    } else if (additional->is_object()) {
      RECGPT_ASSIGN_OR_RETURN(uint16_t value, compile(*additional, pointer + "/additionalProperties"));
      nodes()[index].additional = value;
    } else if (!additional->is_boolean()) {
      return invalid_argument("'" + pointer + "/additionalProperties' is not a boolean or a schema");
    }
    return Status::ok();
  }

  Status fill_array(uint16_t index, const json& schema, const std::string& pointer) {
    uint32_t bounds[2] = {0, std::numeric_limits<uint32_t>::max()};
    const char* names[2] = {"minItems", "maxItems"};
    for (int i = 0; i < 2; ++i) {
      auto bound = schema.find(names[i]);
      if (bound == schema.end()) continue;
      if (!bound->is_number_unsigned() && !(bound->is_number_integer() && bound->get<int64_t>() >= 0)) {
        return invalid_argument("'" + pointer + "/" + names[i] + "' is not a non-negative integer");
      }
      bounds[i] = static_cast<uint32_t>(std::min<uint64_t>(bound->get<uint64_t>(), bounds[1]));
    }
    if (bounds[0] > bounds[1]) return invalid_argument("'" + pointer + "': minItems is above maxItems");
    if (auto items = schema.find("items"); items != schema.end()) {
      if (items->is_array()) return unimplemented("'" + pointer + "/items' as a list (tuples) is not supported");
      RECGPT_ASSIGN_OR_RETURN(uint16_t item, compile(*items, pointer + "/items"));
      nodes()[index].items = item;
      has_items_.insert(index);
    }
    nodes()[index].min_items = bounds[0];
    nodes()[index].max_items = bounds[1];
    return Status::ok();
  }

  // anyOf / oneOf whose branches start with different bytes (distinct JSON types), so the first byte of a value
  // picks its branch: merged into one node. Either keyword then means the same.
  Status fill_union(uint16_t index, const json& schema, const std::string& pointer, const char* combinator) {
    for (const auto& [key, value] : schema.items()) {
      if (key != combinator && kAnnotations.count(key) == 0) {
        return unimplemented("'" + key + "' next to " + combinator + " at " + where(pointer));
      }
    }
    const json& branches = schema[combinator];
    const std::string at = pointer + "/" + combinator;
    if (!branches.is_array() || branches.empty()) return invalid_argument("'" + at + "' is not a non-empty list");
    JsonSchemaNode merged;
    merged.types = 0;
    bool any_enum = false;
    bool open_branch = false;  // a branch whose values are not all texts (strings, numbers, objects, arrays)
    for (size_t i = 0; i < branches.size(); ++i) {
      const std::string branch_at = at + "/" + std::to_string(i);
      RECGPT_ASSIGN_OR_RETURN(uint16_t branch_index, compile(branches[i], branch_at));
      if (in_progress_.count(branch_index) > 0) {
        return unimplemented("'" + branch_at + "' refers back to a schema that holds it (recursion through " +
                             combinator + ")");
      }
      const JsonSchemaNode branch = nodes()[branch_index];
      const auto numeric = [](uint8_t types) { return (types & (kJsonInteger | kJsonNumber)) != 0; };
      if ((merged.types & branch.types) != 0 || (numeric(merged.types) && numeric(branch.types))) {
        return unimplemented("'" + branch_at + "' shares a type with an earlier branch (branches must differ in type)");
      }
      merged.types |= branch.types;
      if (branch.types & kJsonObject) {
        merged.keys = branch.keys;
        merged.key_nodes = branch.key_nodes;
        merged.required = branch.required;
        merged.additional = branch.additional;
      }
      if (branch.types & kJsonArray) {
        merged.items = branch.items;
        merged.min_items = branch.min_items;
        merged.max_items = branch.max_items;
      }
      any_enum = any_enum || branch.is_enum;
      open_branch = open_branch || (!branch.is_enum && (branch.types & ~(kJsonBoolean | kJsonNull)) != 0);
      merged.literals.insert(merged.literals.end(), branch.literals.begin(), branch.literals.end());
    }
    if (any_enum && open_branch) {
      // An enum's values are matched as whole texts, so every branch must be: enums, booleans and null.
      return unimplemented("'" + at + "' mixes an enum with strings, numbers, objects or arrays");
    }
    merged.is_enum = any_enum;
    nodes()[index] = std::move(merged);
    has_object_info_.insert(index);
    has_items_.insert(index);
    return Status::ok();
  }

  static inline const std::set<std::string, std::less<>> kKeywords = {
      "type",  "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum",
      "const", "anyOf",      "oneOf"};

  const json& root_;
  std::shared_ptr<JsonSchema> schema_;
  std::map<std::string, uint16_t> refs_;  // "#"-less JSON pointer -> node
  std::set<uint16_t> in_progress_;
  std::set<uint16_t> has_object_info_;
  std::set<uint16_t> has_items_;
  int32_t any_ = -1;
  int ref_depth_ = 0;
};

std::shared_ptr<const JsonSchema> JsonSchema::any_object() {
  static const std::shared_ptr<const JsonSchema> schema = [] {
    auto compiled = compile(R"({"type": "object"})");
    RECGPT_CHECK(compiled.is_ok());
    return std::move(compiled).value();
  }();
  return schema;
}

Result<std::shared_ptr<const JsonSchema>> JsonSchema::compile(std::string_view schema_json) {
  const JsonTextShape shape = json_text_shape(schema_json, kMaxNesting, kMaxObjectMembers);
  if (shape.depth > kMaxNesting) {
    return invalid_argument("the schema nests deeper than " + std::to_string(kMaxNesting) + " levels");
  }
  if (shape.object_members > kMaxObjectMembers) {
    return invalid_argument("the schema has an object of more than " + std::to_string(kMaxObjectMembers) + " members");
  }
  const json schema = json::parse(schema_json, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded()) return invalid_argument("the schema is not valid JSON");
  return JsonSchemaCompiler(schema).run();
}

}  // namespace recgpt
