// The shape of JSON from outside, found without recursion, to refuse what would cost too much before parsing it.
// nlohmann's parser and destructor handle any depth, but much else recurses per level and overflows the stack on
// a value nested ~100K deep, which an 8 MiB request body holds: dump(), copies, and ordered_json's parser itself
// (an object's keys live in a vector, whose growth copies each value whole, recursively). And ordered_json
// finds a key by a linear search, so parsing an object of n keys costs n^2 / 2 comparisons: 24 s for 200K keys.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace recgpt {

struct JsonTextShape {
  size_t depth = 0;           // the deepest nesting of arrays and objects (0 for a scalar)
  size_t object_members = 0;  // the most members of one object
};

// The shape of `text`, its scan stopped as soon as it is deeper than `max_depth` or an object has more than
// `max_members` members (the figure then one past its limit). Brackets and colons inside strings do not count;
// the text need not be valid JSON.
inline JsonTextShape json_text_shape(std::string_view text, size_t max_depth, size_t max_members) {
  JsonTextShape shape;
  std::vector<size_t> members;  // per open container: its members so far (arrays' stay 0)
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
      members.push_back(0);
      shape.depth = std::max(shape.depth, members.size());
      if (members.size() > max_depth) return shape;
    } else if ((c == ']' || c == '}') && !members.empty()) {
      members.pop_back();
    } else if (c == ':' && !members.empty()) {  // a colon outside strings follows an object's key
      shape.object_members = std::max(shape.object_members, ++members.back());
      if (shape.object_members > max_members) return shape;
    }
  }
  return shape;
}

// The deepest nesting of arrays and objects in `text`, or `limit` + 1 as soon as it is known to be deeper.
inline size_t json_text_depth(std::string_view text, size_t limit) {
  return json_text_shape(text, limit, SIZE_MAX).depth;
}

}  // namespace recgpt
