// A byte-level pushdown automaton for one JSON value under a JsonSchema (engine/json_schema.h): feed() takes the
// output's bytes one at a time and refuses the first that no instance could continue with. Generation masks each
// token whose bytes it would refuse (engine/json_processor.h), so what a constrained sequence writes is always a
// prefix of an instance, and an instance when it ends.
//
// Beyond RFC 8259, it refuses what a model should not write and some parsers reject: surrogate escapes other
// than a high one followed by a low one, invalid UTF-8 in strings, nesting deeper than kMaxDepth, whitespace runs
// longer than kMaxWhitespaceRun, numbers longer than kMaxNumberBytes or with exponents of more than two digits,
// integers (of schemas that ask for them) of more than kMaxIntegerDigits digits, which JavaScript's numbers and
// doubles would not hold exactly, and
// whitespace before or anything after the value.
//
// It never opens an object or array whose smallest instance would not fit within kMaxDepth (JsonSchemaNode's
// depths), so from every state it reaches some bytes complete the value: decoding under it never dead-ends
// (which would end a sequence as if it were whole).
//
// The state is a small fixed array, so a walker can save() before a byte and restore() after it cheaply (the
// token mask's trie walk does this at every node); state_key() names the state for caching masks.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "engine/json_schema.h"

namespace recgpt {

class JsonMatcher {
 public:
  static constexpr int kMaxDepth = JsonSchema::kMaxInstanceDepth;  // open objects, arrays, the innermost value
  static constexpr uint8_t kMaxWhitespaceRun = 16;  // bytes of whitespace between two tokens of the JSON grammar
  static constexpr uint32_t kMaxNumberBytes = 32;
  static constexpr uint32_t kMaxIntegerDigits = 15;  // below 2^53

  explicit JsonMatcher(std::shared_ptr<const JsonSchema> schema);

  // False when `byte` cannot come next; the state is then unspecified (restore() a snapshot or discard it).
  bool feed(uint8_t byte);
  bool feed(std::string_view bytes);

  // The bytes so far are a whole instance. A number at the root is whole but may still grow.
  bool complete() const;
  // The value is closed: nothing may follow.
  bool finished() const { return depth_ == 0; }

  // What a byte may change: the depth, the whitespace run and the top frames (a byte pops at most three).
  struct Snapshot;
  Snapshot save() const;
  void restore(const Snapshot& snapshot);

  // Inside a string, what the string's own state is: every byte of a string is decided by it alone, up to
  // its closing quote (engine/json_processor.h precomputes per string state which tokens stay inside).
  struct StringState {
    uint8_t phase;
    uint32_t count;
    bool operator==(const StringState&) const = default;
  };
  enum class StringStep { kInside, kCloses, kRefused };
  static StringStep string_step(StringState& state, uint8_t byte);
  // The state at a string's opening quote (and after any whole character).
  static StringState string_start();
  // The top value's, when it is a string.
  std::optional<StringState> string_state() const;
  // Precondition: the top value is a string.
  void set_string_state(StringState state);

  // Appends bytes that name this state: two matchers of the same schema with equal keys accept the same bytes.
  void state_key(std::string& out) const;

  // One open value; 16 bytes, no padding (state_key copies them).
  struct Frame {
    uint16_t node;   // its schema node (for a key, the object's)
    uint8_t kind;    // Kind
    uint8_t phase;   // where inside it
    uint32_t count;  // object: the next listed key; array: items; number, literal: bytes read
    uint64_t aux;    // object: the node of the value after the current key; literal: candidates (a bit each);
                     // number: 1 when it starts with '-'
  };

 private:
  enum Kind : uint8_t { kValue, kObject, kArray, kString, kNumber, kLiteral, kKey };
  enum class Step { kTaken, kRefused, kEnded };  // kEnded: the top value ended before the byte

  Step object_byte(Frame& frame, uint8_t byte);
  Step array_byte(Frame& frame, uint8_t byte);
  Step value_byte(Frame& frame, uint8_t byte);
  Step string_byte(Frame& frame, uint8_t byte);
  Step number_byte(Frame& frame, uint8_t byte);
  Step literal_byte(Frame& frame, uint8_t byte);
  bool whitespace(uint8_t byte);
  // Turns `frame` (a kValue) into the value `byte` starts.
  Step start_value(Frame& frame, uint8_t byte);
  bool push(uint16_t node);
  // Whether a value whose smallest instance takes `depth` frames fits from frame index `at` on (never opening
  // what could not be closed within kMaxDepth keeps every state completable).
  static bool fits(int at, uint32_t depth) {
    return depth != JsonSchema::kNoInstance && static_cast<uint64_t>(at) + depth <= kMaxDepth;
  }
  // The listed keys that may come next in the object on top: from its next one through the next required one,
  // each whose value still fits.
  uint64_t key_candidates(const Frame& object) const;
  // The top value is whole: pop it and move its parent on.
  void close_top();
  // A literal (or key) whose bytes so far spell one of its texts exactly: that text's index, else -1.
  int whole_literal(const Frame& frame) const;
  const std::string& literal_text(const Frame& frame, int index) const;

  std::shared_ptr<const JsonSchema> schema_;
  std::array<Frame, kMaxDepth> frames_{};
  int depth_ = 1;
  uint8_t whitespace_run_ = 0;

 public:
  struct Snapshot {
    int depth;
    uint8_t whitespace_run;
    std::array<Frame, 4> top;
  };
};

}  // namespace recgpt
