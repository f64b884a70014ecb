#include "engine/npy.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>

#include "common/mapped_file.h"

namespace recgpt {
namespace {

static_assert(std::endian::native == std::endian::little, "npy float data is copied as is: little-endian");

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr size_t kAlignment = 64;

// One value of the header dict: a string, a bool, a tuple of ints, or anything bracketed (a list).
struct HeaderValue {
  enum class Kind { kString, kBool, kTuple, kList };
  Kind kind = Kind::kString;
  std::string text;
  bool flag = false;
  std::vector<int64_t> dims;
};

struct Header {
  std::optional<HeaderValue> descr;
  std::optional<HeaderValue> fortran_order;
  std::optional<HeaderValue> shape;
};

// A tiny parser for the Python dict literal numpy writes: {'key': value, ...}.
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view text) : text_(text) {}

  // nullopt when the text is not such a dict.
  std::optional<Header> parse() {
    Header header;
    if (!consume('{')) return std::nullopt;
    while (!consume('}')) {
      std::optional<std::string> key = parse_string();
      if (!key || !consume(':')) return std::nullopt;
      std::optional<HeaderValue> value = parse_value();
      if (!value) return std::nullopt;
      if (*key == "descr") header.descr = std::move(value);
      if (*key == "fortran_order") header.fortran_order = std::move(value);
      if (*key == "shape") header.shape = std::move(value);
      if (!consume(',') && !peek('}')) return std::nullopt;
    }
    skip_space();
    return position_ == text_.size() ? std::optional<Header>(header) : std::nullopt;
  }

 private:
  void skip_space() {
    while (position_ < text_.size() && (text_[position_] == ' ' || text_[position_] == '\n')) ++position_;
  }
  bool peek(char expected) {
    skip_space();
    return position_ < text_.size() && text_[position_] == expected;
  }
  bool consume(char expected) {
    if (!peek(expected)) return false;
    ++position_;
    return true;
  }
  bool consume_word(std::string_view word) {
    skip_space();
    if (text_.substr(position_, word.size()) != word) return false;
    position_ += word.size();
    return true;
  }

  std::optional<std::string> parse_string() {
    skip_space();
    if (position_ >= text_.size() || (text_[position_] != '\'' && text_[position_] != '"')) return std::nullopt;
    char quote = text_[position_++];
    size_t end = text_.find(quote, position_);
    if (end == std::string_view::npos) return std::nullopt;
    std::string value(text_.substr(position_, end - position_));
    position_ = end + 1;
    return value;
  }

  std::optional<int64_t> parse_int() {
    skip_space();
    int64_t value = 0;
    size_t start = position_;
    while (position_ < text_.size() && text_[position_] >= '0' && text_[position_] <= '9') {
      if (value > (std::numeric_limits<int64_t>::max() - 9) / 10) return std::nullopt;
      value = value * 10 + (text_[position_++] - '0');
    }
    if (position_ == start) return std::nullopt;
    if (position_ < text_.size() && text_[position_] == 'L') ++position_;  // Python 2 longs
    return value;
  }

  std::optional<HeaderValue> parse_value() {
    HeaderValue value;
    if (peek('\'') || peek('"')) {
      std::optional<std::string> text = parse_string();
      if (!text) return std::nullopt;
      value.text = *text;
      return value;
    }
    value.kind = HeaderValue::Kind::kBool;
    if (consume_word("True")) {
      value.flag = true;
      return value;
    }
    if (consume_word("False")) return value;
    if (consume('(')) {
      value.kind = HeaderValue::Kind::kTuple;
      while (!consume(')')) {
        std::optional<int64_t> dim = parse_int();
        if (!dim) return std::nullopt;
        value.dims.push_back(*dim);
        if (!consume(',') && !peek(')')) return std::nullopt;
      }
      return value;
    }
    if (peek('[')) return skip_list();
    return std::nullopt;
  }

  // Structured dtypes: a list, possibly nested; only recognized, never interpreted.
  std::optional<HeaderValue> skip_list() {
    HeaderValue value;
    value.kind = HeaderValue::Kind::kList;
    int depth = 0;
    size_t start = position_;
    do {
      if (position_ >= text_.size()) return std::nullopt;
      char c = text_[position_++];
      depth += (c == '[' || c == '(') - (c == ']' || c == ')');
    } while (depth > 0);
    value.text = std::string(text_.substr(start, position_ - start));
    return value;
  }

  std::string_view text_;
  size_t position_ = 0;
};

uint64_t read_le(const std::byte* bytes, int num_bytes) {
  uint64_t value = 0;
  for (int i = num_bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<uint64_t>(bytes[i]);
  return value;
}

// Checks descr, fortran_order and shape; returns the element count.
Result<int64_t> check_header(const Header& header, const std::string& path) {
  if (!header.descr || !header.fortran_order || !header.shape) {
    return data_loss("npy header of '" + path + "' lacks 'descr', 'fortran_order' or 'shape'");
  }
  if (header.descr->kind == HeaderValue::Kind::kList) {
    return unimplemented("npy '" + path + "' has a structured dtype " + header.descr->text + "; only '<f4' is read");
  }
  if (header.descr->kind != HeaderValue::Kind::kString) return data_loss("npy 'descr' of '" + path + "' is no string");
  if (header.descr->text != "<f4") {
    return unimplemented("npy '" + path + "' has dtype '" + header.descr->text + "'; only '<f4' (float32) is read");
  }
  if (header.fortran_order->kind != HeaderValue::Kind::kBool) {
    return data_loss("npy 'fortran_order' of '" + path + "' is no bool");
  }
  if (header.fortran_order->flag) return unimplemented("npy '" + path + "' is in Fortran order; only C order is read");
  if (header.shape->kind != HeaderValue::Kind::kTuple) return data_loss("npy 'shape' of '" + path + "' is no tuple");
  int64_t count = 1;
  for (int64_t dim : header.shape->dims) {
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / 4 / dim) {
      return data_loss("npy shape of '" + path + "' overflows");
    }
    count *= dim;
  }
  return count;
}

std::string shape_literal(std::span<const int64_t> shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

// The full preamble: magic, version, header length, and the padded header dict ending in '\n'.
std::string make_preamble(std::span<const int64_t> shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_literal(shape) + ", }";
  for (int major : {1, 2}) {
    size_t length_bytes = major == 1 ? 2 : 4;
    size_t prefix = kMagic.size() + 2 + length_bytes;
    size_t total = (prefix + dict.size() + 1 + kAlignment - 1) / kAlignment * kAlignment;
    size_t header_length = total - prefix;
    if (major == 1 && header_length > std::numeric_limits<uint16_t>::max()) continue;
    std::string preamble(kMagic);
    preamble += static_cast<char>(major);
    preamble += '\0';
    for (size_t i = 0; i < length_bytes; ++i) preamble += static_cast<char>((header_length >> (8 * i)) & 0xff);
    preamble += dict;
    preamble.append(total - preamble.size() - 1, ' ');
    return preamble + '\n';
  }
  return {};  // unreachable: version 2's 32-bit length holds any shape literal
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

}  // namespace

Result<NpyArray> read_npy_f32(const std::string& path) {
  RECGPT_ASSIGN_OR_RETURN(MappedFile file, MappedFile::open(path));
  const std::byte* bytes = file.data();
  const size_t size = file.size();
  if (size < kMagic.size() + 4 || std::memcmp(bytes, kMagic.data(), kMagic.size()) != 0) {
    return data_loss("'" + path + "' is not an npy file (bad magic)");
  }
  const int major = static_cast<int>(bytes[6]);
  if (major < 1 || major > 3) {
    return unimplemented("npy '" + path + "' has format version " + std::to_string(major) + "; 1, 2 and 3 are read");
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t header_start = 8 + length_bytes;
  if (size < header_start) return data_loss("npy '" + path + "' is truncated in its preamble");
  const uint64_t header_length = read_le(bytes + 8, static_cast<int>(length_bytes));
  if (header_length > size - header_start) return data_loss("npy header of '" + path + "' is truncated");
  std::string_view header_text(reinterpret_cast<const char*>(bytes + header_start), header_length);
  std::optional<Header> header = HeaderParser(header_text).parse();
  if (!header) return data_loss("npy header of '" + path + "' is not a valid dict: " + std::string(header_text));
  RECGPT_ASSIGN_OR_RETURN(int64_t count, check_header(*header, path));

  const size_t data_start = header_start + header_length;
  if (size - data_start != static_cast<uint64_t>(count) * sizeof(float)) {
    return data_loss("npy '" + path + "' holds " + std::to_string(size - data_start) + " data bytes, shape " +
                     shape_literal(header->shape->dims) + " needs " + std::to_string(count * 4));
  }
  NpyArray array;
  array.shape = header->shape->dims;
  array.data.resize(static_cast<size_t>(count));
  if (count > 0) std::memcpy(array.data.data(), bytes + data_start, array.data.size() * sizeof(float));
  return array;
}

Status write_npy_f32(const std::string& path, std::span<const int64_t> shape, std::span<const float> data) {
  uint64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return invalid_argument("npy shape " + shape_literal(shape) + " has a negative dimension");
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(dim), &count)) {
      return invalid_argument("npy shape " + shape_literal(shape) + " overflows");
    }
  }
  if (count != data.size()) {
    return invalid_argument("npy shape " + shape_literal(shape) + " holds " + std::to_string(count) +
                            " elements, data has " + std::to_string(data.size()));
  }
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "wb"));
  if (!file) return io_error("cannot create '" + path + "': " + std::strerror(errno));
  const std::string preamble = make_preamble(shape);
  bool written = std::fwrite(preamble.data(), 1, preamble.size(), file.get()) == preamble.size() &&
                 (data.empty() || std::fwrite(data.data(), sizeof(float), data.size(), file.get()) == data.size());
  written = std::fclose(file.release()) == 0 && written;
  if (!written) return io_error("cannot write '" + path + "'");
  return Status::ok();
}

}  // namespace recgpt
