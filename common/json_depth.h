// How deeply JSON nests, found without recursion, for input from outside. nlohmann's parser and destructor
// handle any depth, but much else recurses per level and overflows the stack on a value nested ~100K deep, which
// an 8 MiB request body holds: dump(), copies, and ordered_json's parser itself (an object's keys live in a
// vector, whose growth copies each value whole, recursively). Callers check the text before parsing it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>
#include <utility>
#include <vector>

namespace recgpt {

// The deepest nesting of arrays and objects in `text` (0 for a scalar), or `limit` + 1 as soon as it is known to
// be deeper than `limit`. Brackets inside strings do not count; the text need not be valid JSON.
inline size_t json_text_depth(std::string_view text, size_t limit) {
  size_t depth = 0;
  size_t deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, a quote included
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return limit + 1;
      deepest = depth > deepest ? depth : deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// The same for a parsed value (1 for a scalar or an empty container). `Json` is nlohmann::json or ordered_json.
template <typename Json>
size_t json_depth(const Json& value, size_t limit) {
  size_t deepest = 0;
  std::vector<std::pair<const Json*, size_t>> pending = {{&value, 1}};
  while (!pending.empty()) {
    const auto [node, depth] = pending.back();
    pending.pop_back();
    if (depth > limit) return limit + 1;
    deepest = std::max(deepest, depth);
    if (node->is_structured()) {
      for (const Json& child : *node) pending.emplace_back(&child, depth + 1);
    }
  }
  return deepest;
}

}  // namespace recgpt
