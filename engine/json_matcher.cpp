#include "engine/json_matcher.h"

#include <bit>
#include <cstring>

namespace recgpt {
namespace {

static_assert(sizeof(JsonMatcher::Frame) == 16, "state_key copies frames whole: no padding");

// Object phases.
enum : uint8_t { kKeyOrClose, kKeyNext, kInKey, kColon, kInValue, kCommaOrCloseObject };
// Array phases.
enum : uint8_t { kItemOrClose, kItemNext, kInItem, kCommaOrCloseArray };
// String phases. \u escapes: kHex1-kHex4 for the digits; after "\uD" the next digit picks a plain one (0-7) or a
// high surrogate (8-B), whose escape must be followed by a low one ("\uDC00" to "\uDFFF"). The kUtf8* ones expect
// a continuation byte (the first limited to a range), `count` of them left.
enum : uint8_t {
  kChars,
  kEscape,
  kHex1,
  kHex2,
  kHex2AfterD,
  kHex3,
  kHex4,
  kHighHex3,
  kHighHex4,
  kLowBackslash,
  kLowU,
  kLowD,
  kLow2,
  kUtf8,
  kUtf8E0,
  kUtf8ED,
  kUtf8F0,
  kUtf8F4
};
// Number phases, after: '-', a leading '0', integer digits, '.', fraction digits, 'e', the exponent's sign, its
// first digit, its second (the last: a double holds any number so written, which parsers such as nlohmann's
// insist on).
enum : uint8_t { kMinus, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpDigit, kExpDigit2 };

bool is_whitespace(uint8_t byte) { return byte == ' ' || byte == '\n' || byte == '\r' || byte == '\t'; }
bool is_digit(uint8_t byte) { return byte >= '0' && byte <= '9'; }
bool is_hex(uint8_t byte) { return is_digit(byte) || (byte >= 'a' && byte <= 'f') || (byte >= 'A' && byte <= 'F'); }
bool number_whole(uint8_t phase) {
  return phase == kZero || phase == kInt || phase == kFrac || phase == kExpDigit || phase == kExpDigit2;
}

}  // namespace

JsonMatcher::JsonMatcher(std::shared_ptr<const JsonSchema> schema) : schema_(std::move(schema)) {
  frames_[0] = Frame{JsonSchema::kRoot, kValue, 0, 0, 0};
}

bool JsonMatcher::feed(std::string_view bytes) {
  for (char c : bytes) {
    if (!feed(static_cast<uint8_t>(c))) return false;
  }
  return true;
}

bool JsonMatcher::feed(uint8_t byte) {
  if (!is_whitespace(byte)) whitespace_run_ = 0;
  // A number or a literal that could still grow ends at the first byte past it, which its parent then reads.
  while (depth_ > 0) {
    Frame& top = frames_[static_cast<size_t>(depth_ - 1)];
    Step step = Step::kRefused;
    switch (top.kind) {
      case kValue: step = value_byte(top, byte); break;
      case kObject: step = object_byte(top, byte); break;
      case kArray: step = array_byte(top, byte); break;
      case kString: step = string_byte(top, byte); break;
      case kNumber: step = number_byte(top, byte); break;
      case kLiteral:
      case kKey: step = literal_byte(top, byte); break;
    }
    if (step != Step::kEnded) return step == Step::kTaken;
    close_top();
  }
  return false;  // after the value
}

bool JsonMatcher::complete() const {
  if (depth_ == 0) return true;
  if (depth_ > 1) return false;
  const Frame& root = frames_[0];
  if (root.kind == kNumber) return number_whole(root.phase);
  return root.kind == kLiteral && whole_literal(root) >= 0;
}

bool JsonMatcher::whitespace(uint8_t byte) {
  if (!is_whitespace(byte) || whitespace_run_ >= kMaxWhitespaceRun) return false;
  ++whitespace_run_;
  return true;
}

bool JsonMatcher::push(uint16_t node) {
  if (depth_ >= kMaxDepth) return false;
  frames_[static_cast<size_t>(depth_++)] = Frame{node, kValue, 0, 0, 0};
  return true;
}

void JsonMatcher::close_top() {
  --depth_;
  if (depth_ == 0) return;
  Frame& parent = frames_[static_cast<size_t>(depth_ - 1)];
  if (parent.kind == kObject) {
    parent.phase = parent.phase == kInKey ? kColon : kCommaOrCloseObject;
  } else {  // an array: only containers hold values
    ++parent.count;
    parent.phase = kCommaOrCloseArray;
  }
}

JsonMatcher::Step JsonMatcher::value_byte(Frame& frame, uint8_t byte) {
  if (depth_ > 1 && whitespace(byte)) return Step::kTaken;  // the output starts with its value
  return start_value(frame, byte);
}

JsonMatcher::Step JsonMatcher::start_value(Frame& frame, uint8_t byte) {
  const JsonSchemaNode& node = schema_->node(frame.node);
  const int at = depth_ - 1;  // this value's frame
  if (!node.is_enum) {
    if (byte == '{' && (node.types & kJsonObject) && fits(at, node.object_depth)) {
      frame = Frame{frame.node, kObject, kKeyOrClose, 0, 0};
      return Step::kTaken;
    }
    if (byte == '[' && (node.types & kJsonArray) && fits(at, node.array_depth)) {
      frame = Frame{frame.node, kArray, kItemOrClose, 0, 0};
      return Step::kTaken;
    }
    if (byte == '"' && (node.types & kJsonString)) {
      frame = Frame{frame.node, kString, kChars, 0, 0};
      return Step::kTaken;
    }
    if ((byte == '-' || is_digit(byte)) && (node.types & (kJsonInteger | kJsonNumber))) {
      frame = Frame{frame.node, kNumber, byte == '-' ? kMinus : byte == '0' ? kZero : kInt, 1, byte == '-' ? 1u : 0u};
      return Step::kTaken;
    }
  }
  uint64_t candidates = 0;
  for (size_t i = 0; i < node.literals.size(); ++i) {
    if (static_cast<uint8_t>(node.literals[i][0]) == byte) candidates |= uint64_t{1} << i;
  }
  if (candidates == 0) return Step::kRefused;
  frame = Frame{frame.node, kLiteral, 0, 0, candidates};
  return literal_byte(frame, byte);
}

JsonMatcher::Step JsonMatcher::object_byte(Frame& frame, uint8_t byte) {
  const JsonSchemaNode& node = schema_->node(frame.node);
  if (whitespace(byte)) return Step::kTaken;
  const bool listed = !node.keys.empty();
  const bool may_close = listed ? node.next_required(frame.count) == node.keys.size() : true;
  switch (frame.phase) {
    case kKeyOrClose:
    case kKeyNext:
      if (byte == '}' && frame.phase == kKeyOrClose && may_close) {
        close_top();
        return Step::kTaken;
      }
      if (byte != '"') return Step::kRefused;
      if (listed) {
        const uint64_t candidates = key_candidates(frame);
        if (candidates == 0) return Step::kRefused;
        frame.phase = kInKey;
        frames_[static_cast<size_t>(depth_++)] = Frame{frame.node, kKey, 0, 1, candidates};
        return Step::kTaken;
      }
      if (node.additional < 0 || !fits(depth_, schema_->node(static_cast<size_t>(node.additional)).min_depth)) {
        return Step::kRefused;
      }
      frame.phase = kInKey;
      frame.aux = static_cast<uint64_t>(node.additional);
      frames_[static_cast<size_t>(depth_++)] = Frame{frame.node, kString, kChars, 0, 0};
      return Step::kTaken;
    case kColon:
      if (byte != ':' || !push(static_cast<uint16_t>(frame.aux))) return Step::kRefused;
      frame.phase = kInValue;
      return Step::kTaken;
    case kCommaOrCloseObject:
      if (byte == '}' && may_close) {
        close_top();
        return Step::kTaken;
      }
      if (byte == ',' && (listed ? key_candidates(frame) != 0
                                 : node.additional >= 0 &&
                                       fits(depth_, schema_->node(static_cast<size_t>(node.additional)).min_depth))) {
        frame.phase = kKeyNext;
        return Step::kTaken;
      }
      return Step::kRefused;
    default: return Step::kRefused;
  }
}

uint64_t JsonMatcher::key_candidates(const Frame& object) const {
  const JsonSchemaNode& node = schema_->node(object.node);
  if (object.count >= node.keys.size()) return 0;
  const size_t last = std::min(node.next_required(object.count), node.keys.size() - 1);
  uint64_t candidates = 0;
  for (size_t i = object.count; i <= last; ++i) {
    if (fits(depth_, schema_->node(node.key_nodes[i]).min_depth)) candidates |= uint64_t{1} << i;
  }
  return candidates;
}

JsonMatcher::Step JsonMatcher::array_byte(Frame& frame, uint8_t byte) {
  const JsonSchemaNode& node = schema_->node(frame.node);
  if (whitespace(byte)) return Step::kTaken;
  switch (frame.phase) {
    case kItemOrClose:
      if (byte == ']' && node.min_items == 0) {
        close_top();
        return Step::kTaken;
      }
      [[fallthrough]];
    case kItemNext: {
      if (frame.count >= node.max_items || !fits(depth_, schema_->node(node.items).min_depth) || !push(node.items)) {
        return Step::kRefused;
      }
      frame.phase = kInItem;
      Frame& item = frames_[static_cast<size_t>(depth_ - 1)];
      const Step step = start_value(item, byte);
      if (step != Step::kRefused) return step;
      --depth_;
      return Step::kRefused;
    }
    case kCommaOrCloseArray:
      if (byte == ']' && frame.count >= node.min_items) {
        close_top();
        return Step::kTaken;
      }
      if (byte == ',' && frame.count < node.max_items && fits(depth_, schema_->node(node.items).min_depth)) {
        frame.phase = kItemNext;
        return Step::kTaken;
      }
      return Step::kRefused;
    default: return Step::kRefused;
  }
}

JsonMatcher::Step JsonMatcher::string_byte(Frame& frame, uint8_t byte) {
  StringState state{frame.phase, frame.count};
  switch (string_step(state, byte)) {
    case StringStep::kInside:
      frame.phase = state.phase;
      frame.count = state.count;
      return Step::kTaken;
    case StringStep::kCloses: close_top(); return Step::kTaken;
    default: return Step::kRefused;
  }
}

std::optional<JsonMatcher::StringState> JsonMatcher::string_state() const {
  if (depth_ == 0 || frames_[static_cast<size_t>(depth_ - 1)].kind != kString) return std::nullopt;
  const Frame& top = frames_[static_cast<size_t>(depth_ - 1)];
  return StringState{top.phase, top.count};
}

void JsonMatcher::set_string_state(StringState state) {
  Frame& top = frames_[static_cast<size_t>(depth_ - 1)];
  RECGPT_CHECK(depth_ > 0 && top.kind == kString);
  top.phase = state.phase;
  top.count = state.count;
}

JsonMatcher::StringState JsonMatcher::string_start() { return StringState{kChars, 0}; }

JsonMatcher::StringStep JsonMatcher::string_step(StringState& frame, uint8_t byte) {
  using Step = StringStep;
  const auto tail = [&](uint8_t low, uint8_t high) {
    if (byte < low || byte > high) return Step::kRefused;
    frame.phase = --frame.count == 0 ? kChars : kUtf8;
    return Step::kInside;
  };
  constexpr Step kTaken = Step::kInside;
  switch (frame.phase) {
    case kChars:
      if (byte == '"') return Step::kCloses;
      if (byte == '\\') {
        frame.phase = kEscape;
        return kTaken;
      }
      if (byte < 0x20) return Step::kRefused;
      if (byte < 0x80) return kTaken;
      // A UTF-8 lead byte: how many continuation bytes follow, and which range the first must fall in
      // (no overlong forms, no surrogates, nothing past U+10FFFF).
      if (byte >= 0xC2 && byte <= 0xDF) {
        frame.count = 1;
        frame.phase = kUtf8;
      } else if (byte >= 0xE0 && byte <= 0xEF) {
        frame.count = 2;
        frame.phase = byte == 0xE0 ? kUtf8E0 : byte == 0xED ? kUtf8ED : kUtf8;
      } else if (byte >= 0xF0 && byte <= 0xF4) {
        frame.count = 3;
        frame.phase = byte == 0xF0 ? kUtf8F0 : byte == 0xF4 ? kUtf8F4 : kUtf8;
      } else {
        return Step::kRefused;
      }
      return kTaken;
    case kEscape:
      if (byte == 'u') {
        frame.phase = kHex1;
        return kTaken;
      }
      if (std::strchr("\"\\/bfnrt", byte) == nullptr || byte == 0) return Step::kRefused;
      frame.phase = kChars;
      return kTaken;
    case kHex1:
      if (!is_hex(byte)) return Step::kRefused;
      frame.phase = (byte == 'd' || byte == 'D') ? kHex2AfterD : kHex2;
      return kTaken;
    case kHex2AfterD: {
      const uint8_t digit = static_cast<uint8_t>(byte | 0x20);  // lower case
      if (is_digit(byte) && byte <= '7')
        frame.phase = kHex3;
      else if (byte == '8' || byte == '9' || digit == 'a' || digit == 'b')
        frame.phase = kHighHex3;
      else
        return Step::kRefused;  // a lone low surrogate
      return kTaken;
    }
    case kHex2:
    case kHex3:
    case kHex4:
    case kHighHex3:
    case kHighHex4: {
      if (!is_hex(byte)) return Step::kRefused;
      constexpr uint8_t kAfter[] = {0, 0, 0, kHex3, 0, kHex4, kChars, kHighHex4, kLowBackslash};
      frame.phase = kAfter[frame.phase];
      return kTaken;
    }
    case kLowBackslash:
    case kLowU:
    case kLowD:
    case kLow2: {
      const uint8_t lower = static_cast<uint8_t>(byte | 0x20);
      const bool ok = frame.phase == kLowBackslash ? byte == '\\'
                      : frame.phase == kLowU       ? byte == 'u'
                      : frame.phase == kLowD       ? lower == 'd'
                                                   : (lower >= 'c' && lower <= 'f');
      if (!ok) return Step::kRefused;
      frame.phase = frame.phase == kLow2 ? uint8_t{kHex3} : static_cast<uint8_t>(frame.phase + 1);
      return kTaken;
    }
    case kUtf8: return tail(0x80, 0xBF);
    case kUtf8E0: return tail(0xA0, 0xBF);
    case kUtf8ED: return tail(0x80, 0x9F);
    case kUtf8F0: return tail(0x90, 0xBF);
    case kUtf8F4: return tail(0x80, 0x8F);
    default: return Step::kRefused;
  }
}

JsonMatcher::Step JsonMatcher::number_byte(Frame& frame, uint8_t byte) {
  const bool integer_only = !(schema_->node(frame.node).types & kJsonNumber);
  uint8_t next = 0xFF;
  switch (frame.phase) {
    case kMinus:
      if (is_digit(byte)) next = byte == '0' ? kZero : kInt;
      break;
    case kZero:
    case kInt:
      if (is_digit(byte) && frame.phase == kInt)
        next = kInt;
      else if (byte == '.' && !integer_only)
        next = kDot;
      else if ((byte == 'e' || byte == 'E') && !integer_only)
        next = kExp;
      break;
    case kDot:
    case kFrac:
      if (is_digit(byte))
        next = kFrac;
      else if ((byte == 'e' || byte == 'E') && frame.phase == kFrac)
        next = kExp;
      break;
    case kExp:
      if (byte == '+' || byte == '-')
        next = kExpSign;
      else if (is_digit(byte))
        next = kExpDigit;
      break;
    case kExpSign:
      if (is_digit(byte)) next = kExpDigit;
      break;
    case kExpDigit:
      if (is_digit(byte)) next = kExpDigit2;
      break;
    default: break;
  }
  if (next == 0xFF) return number_whole(frame.phase) ? Step::kEnded : Step::kRefused;
  if (frame.count >= kMaxNumberBytes) return Step::kRefused;
  // A byte that leaves the number unfinished ('.', 'e', a sign) needs room for a digit after it.
  if (!number_whole(next) && frame.count + 2 > kMaxNumberBytes) return Step::kRefused;
  if (integer_only && frame.count - frame.aux >= kMaxIntegerDigits) return Step::kRefused;
  ++frame.count;
  frame.phase = next;
  return Step::kTaken;
}

const std::string& JsonMatcher::literal_text(const Frame& frame, int index) const {
  const JsonSchemaNode& node = schema_->node(frame.node);
  return frame.kind == kKey ? node.keys[static_cast<size_t>(index)] : node.literals[static_cast<size_t>(index)];
}

int JsonMatcher::whole_literal(const Frame& frame) const {
  for (uint64_t left = frame.aux; left != 0; left &= left - 1) {
    const int index = std::countr_zero(left);
    if (literal_text(frame, index).size() == frame.count) return index;
  }
  return -1;
}

JsonMatcher::Step JsonMatcher::literal_byte(Frame& frame, uint8_t byte) {
  uint64_t still = 0;
  bool longer = false;  // a candidate goes on past this byte
  for (uint64_t left = frame.aux; left != 0; left &= left - 1) {
    const int index = std::countr_zero(left);
    const std::string& text = literal_text(frame, index);
    if (text.size() > frame.count && static_cast<uint8_t>(text[frame.count]) == byte) {
      still |= uint64_t{1} << index;
      longer = longer || text.size() > frame.count + 1;
    }
  }
  if (still == 0) return whole_literal(frame) >= 0 ? Step::kEnded : Step::kRefused;
  frame.aux = still;
  ++frame.count;
  if (longer) return Step::kTaken;
  // Every candidate left ends here (they are distinct, so exactly one): the value is whole.
  const int index = whole_literal(frame);
  if (frame.kind == kKey) {
    Frame& object = frames_[static_cast<size_t>(depth_ - 2)];
    object.count = static_cast<uint32_t>(index + 1);
    object.aux = schema_->node(frame.node).key_nodes[static_cast<size_t>(index)];
  }
  close_top();
  return Step::kTaken;
}

JsonMatcher::Snapshot JsonMatcher::save() const {
  Snapshot snapshot{depth_, whitespace_run_, {}};
  for (int i = 0; i < 4 && i < depth_; ++i)
    snapshot.top[static_cast<size_t>(i)] = frames_[static_cast<size_t>(depth_ - 1 - i)];
  return snapshot;
}

void JsonMatcher::restore(const Snapshot& snapshot) {
  depth_ = snapshot.depth;
  whitespace_run_ = snapshot.whitespace_run;
  for (int i = 0; i < 4 && i < depth_; ++i)
    frames_[static_cast<size_t>(depth_ - 1 - i)] = snapshot.top[static_cast<size_t>(i)];
}

void JsonMatcher::state_key(std::string& out) const {
  out.push_back(static_cast<char>(depth_));
  out.push_back(static_cast<char>(whitespace_run_));
  for (int i = 0; i < depth_; ++i) {
    Frame frame = frames_[static_cast<size_t>(i)];
    if (frame.kind == kArray) {
      // Only how the count stands against the bounds matters: arrays of any length share masks.
      const JsonSchemaNode& node = schema_->node(frame.node);
      frame.count = std::min(frame.count, std::max(node.min_items, node.max_items == UINT32_MAX ? 0 : node.max_items));
    }
    const char* bytes = reinterpret_cast<const char*>(&frame);
    out.append(bytes, sizeof(frame));
  }
}

}  // namespace recgpt
