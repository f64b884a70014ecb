#include "engine/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "engine/tensor_view.h"

namespace recgpt {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr uint64_t kMaxDimension = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

// Dtypes of the safetensors specification that this engine does not compute with.
bool is_known_unsupported_dtype(std::string_view name) {
  static constexpr std::string_view kNames[] = {"BOOL",    "U8",  "I8",      "I16",     "U16",     "I32",
                                                "U32",     "I64", "U64",     "F64",     "F8_E4M3", "F8_E5M2",
                                                "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

Status tensor_error(std::string_view tensor, const std::string& detail) {
  return data_loss("tensor '" + std::string(tensor) + "': " + detail);
}

// product(shape) * dtype_size, or nullopt on overflow.
std::optional<uint64_t> checked_byte_count(std::span<const int64_t> shape, DType dtype) {
  uint64_t bytes = dtype_size(dtype);
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes)) return std::nullopt;
  }
  return bytes;
}

Result<DType> read_dtype(std::string_view tensor, const json& entry) {
  auto it = entry.find("dtype");
  if (it == entry.end() || !it->is_string()) return tensor_error(tensor, "missing or non-string 'dtype'");
  const std::string& name = it->get_ref<const std::string&>();
  if (std::optional<DType> dtype = dtype_from_safetensors_name(name)) return *dtype;
  if (is_known_unsupported_dtype(name)) {
    return unimplemented("tensor '" + std::string(tensor) + "' has dtype " + name +
                         "; only F32, BF16 and F16 are supported");
  }
  return tensor_error(tensor, "unknown dtype '" + name + "'");
}

Result<uint64_t> read_non_negative(std::string_view tensor, std::string_view field, const json& value) {
  if (value.is_number_unsigned() && value.get<uint64_t>() <= kMaxDimension) return value.get<uint64_t>();
  // Only numbers are echoed: dumping an arbitrarily nested value would recurse without bound.
  std::string shown = value.is_number() ? value.dump() : std::string("a ") + value.type_name();
  std::string detail = std::string(field) + " holds " + shown + ", not a non-negative 64-bit integer";
  return tensor_error(tensor, detail);
}

Result<std::vector<int64_t>> read_shape(std::string_view tensor, const json& entry) {
  auto it = entry.find("shape");
  if (it == entry.end() || !it->is_array()) return tensor_error(tensor, "missing or non-array 'shape'");
  std::vector<int64_t> shape;
  shape.reserve(it->size());
  for (const json& dim : *it) {
    RECGPT_ASSIGN_OR_RETURN(uint64_t value, read_non_negative(tensor, "shape", dim));
    shape.push_back(static_cast<int64_t>(value));
  }
  return shape;
}

struct ByteRange {
  uint64_t begin = 0;
  uint64_t end = 0;
};

Result<ByteRange> read_offsets(std::string_view tensor, const json& entry, uint64_t data_bytes) {
  auto it = entry.find("data_offsets");
  if (it == entry.end() || !it->is_array() || it->size() != 2) {
    return tensor_error(tensor, "'data_offsets' must be an array [begin, end]");
  }
  ByteRange range;
  RECGPT_ASSIGN_OR_RETURN(range.begin, read_non_negative(tensor, "data_offsets", (*it)[0]));
  RECGPT_ASSIGN_OR_RETURN(range.end, read_non_negative(tensor, "data_offsets", (*it)[1]));
  std::string offsets = "data_offsets [" + std::to_string(range.begin) + ", " + std::to_string(range.end) + "]";
  if (range.begin > range.end) return tensor_error(tensor, offsets + " has begin after end");
  if (range.end > data_bytes) {
    return tensor_error(tensor, offsets + " end past the data section (" + std::to_string(data_bytes) + " bytes)");
  }
  return range;
}

Result<SafetensorsEntry> read_entry(const std::string& name, const json& entry, std::span<const std::byte> data) {
  if (!entry.is_object()) return tensor_error(name, std::string("entry is ") + entry.type_name() + ", not an object");
  SafetensorsEntry result;
  result.name = name;
  RECGPT_ASSIGN_OR_RETURN(result.dtype, read_dtype(name, entry));
  RECGPT_ASSIGN_OR_RETURN(result.shape, read_shape(name, entry));
  RECGPT_ASSIGN_OR_RETURN(ByteRange range, read_offsets(name, entry, data.size()));
  std::optional<uint64_t> expected_bytes = checked_byte_count(result.shape, result.dtype);
  if (!expected_bytes) return tensor_error(name, "shape " + shape_to_string(result.shape) + " overflows");
  if (range.end - range.begin != *expected_bytes) {
    return tensor_error(name, "data_offsets span " + std::to_string(range.end - range.begin) + " bytes but shape " +
                                  shape_to_string(result.shape) + " of " +
                                  std::string(safetensors_dtype_name(result.dtype)) + " needs " +
                                  std::to_string(*expected_bytes));
  }
  result.bytes = data.subspan(range.begin, range.end - range.begin);
  return result;
}

Status check_metadata(const json& metadata) {
  if (!metadata.is_object()) return data_loss("'__metadata__' must be an object of strings");
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string()) return data_loss("'__metadata__' value of '" + key + "' is not a string");
  }
  return Status::ok();
}

// Tensors may not share bytes: overlapping ranges mean a corrupt header.
Status check_no_overlap(const std::vector<SafetensorsEntry>& entries) {
  std::vector<const SafetensorsEntry*> by_offset;
  for (const SafetensorsEntry& entry : entries) {
    if (!entry.bytes.empty()) by_offset.push_back(&entry);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->bytes.data() < b->bytes.data(); });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsEntry& previous = *by_offset[i - 1];
    if (by_offset[i]->bytes.data() < previous.bytes.data() + previous.bytes.size()) {
      return data_loss("tensors '" + previous.name + "' and '" + by_offset[i]->name + "' overlap");
    }
  }
  return Status::ok();
}

Result<std::vector<SafetensorsEntry>> parse_header(const json& header, std::span<const std::byte> data) {
  if (!header.is_object()) return data_loss(std::string("header is a JSON ") + header.type_name() + ", not an object");
  std::vector<SafetensorsEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      RECGPT_RETURN_IF_ERROR(check_metadata(entry));
      continue;
    }
    RECGPT_ASSIGN_OR_RETURN(SafetensorsEntry parsed, read_entry(name, entry, data));
    entries.push_back(std::move(parsed));
  }
  RECGPT_RETURN_IF_ERROR(check_no_overlap(entries));
  return entries;  // json objects iterate in key order, so these are sorted by name
}

}  // namespace

Result<std::vector<SafetensorsEntry>> parse_safetensors(std::span<const std::byte> file_bytes) {
  if (file_bytes.size() < 8) {
    return data_loss("file is " + std::to_string(file_bytes.size()) + " bytes, too short for the 8-byte header length");
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | static_cast<uint8_t>(file_bytes[i]);
  if (header_bytes > kMaxHeaderBytes) {
    return data_loss("header length " + std::to_string(header_bytes) + " exceeds the 100 MB limit");
  }
  if (header_bytes > file_bytes.size() - 8) {
    return data_loss("header length " + std::to_string(header_bytes) + " past the end of the file (" +
                     std::to_string(file_bytes.size()) + " bytes)");
  }
  std::span<const std::byte> header_text = file_bytes.subspan(8, header_bytes);
  std::span<const std::byte> data = file_bytes.subspan(8 + header_bytes);
  try {
    const char* begin = reinterpret_cast<const char*>(header_text.data());
    json header = json::parse(begin, begin + header_text.size());
    return parse_header(header, data);
  } catch (const json::parse_error& error) {
    return data_loss("header is not valid JSON at byte " + std::to_string(error.byte) + ": " + error.what());
  } catch (const json::exception& error) {
    return data_loss(std::string("header: ") + error.what());
  }
}

Result<std::string> encode_safetensors_header(std::span<const SafetensorsTensor> tensors) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const SafetensorsTensor& tensor : tensors) {
    if (header.contains(tensor.name)) return invalid_argument("tensor name '" + tensor.name + "' is used twice");
    std::optional<uint64_t> bytes = checked_byte_count(tensor.shape, tensor.dtype);
    if (!bytes || *bytes != tensor.bytes.size()) {
      return invalid_argument("tensor '" + tensor.name + "' has " + std::to_string(tensor.bytes.size()) +
                              " bytes, which does not match shape " + shape_to_string(tensor.shape));
    }
    header[tensor.name] = {{"dtype", safetensors_dtype_name(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + *bytes}}};
    offset += *bytes;
  }
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  text.append((kSafetensorsDataAlignment - (8 + text.size()) % kSafetensorsDataAlignment) % kSafetensorsDataAlignment,
              ' ');
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  return prefix + text;
}

namespace {

// Readers map weights asking for 2 MiB pages (MappedFile), which the kernel can give only from large page-cache
// folios; pages cached by these buffered writes are mostly small ones (measured: 20% of a fresh 1.2 GB model
// mapped huge, 100% once re-read; decode matmuls ~12% faster). So the data is written out and dropped from the
// cache, and the first reader reads it back into large folios. Best effort.
void drop_from_page_cache(std::FILE* file) {
  if (std::fflush(file) != 0) return;
  int fd = fileno(file);
  if (::fdatasync(fd) == 0) (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

}  // namespace

Status write_safetensors(const std::string& path, std::span<const SafetensorsTensor> tensors) {
  RECGPT_ASSIGN_OR_RETURN(std::string header, encode_safetensors_header(tensors));
  // Written beside the destination and renamed, so a failed write never leaves a truncated file at `path`.
  std::string temporary_path = path + ".partial";
  std::FILE* file = std::fopen(temporary_path.c_str(), "wb");
  if (file == nullptr) return io_error("cannot create '" + temporary_path + "': " + std::strerror(errno));
  bool written = std::fwrite(header.data(), 1, header.size(), file) == header.size();
  for (const SafetensorsTensor& tensor : tensors) {
    if (!written) break;
    if (tensor.bytes.empty()) continue;  // an empty span may hold a null pointer, which fwrite must not get
    written = std::fwrite(tensor.bytes.data(), 1, tensor.bytes.size(), file) == tensor.bytes.size();
  }
  if (written) drop_from_page_cache(file);
  written = (std::fclose(file) == 0) && written;
  if (!written || std::rename(temporary_path.c_str(), path.c_str()) != 0) {
    std::remove(temporary_path.c_str());
    return io_error("cannot write '" + path + "'");
  }
  return Status::ok();
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  RECGPT_ASSIGN_OR_RETURN(file.file_, MappedFile::open(path));
  Result<std::vector<SafetensorsEntry>> entries = parse_safetensors(file.file_.bytes());
  if (!entries.is_ok()) return entries.status().with_context(path);
  file.entries_ = std::move(entries).value();
  return file;
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const SafetensorsEntry& entry, std::string_view key) { return entry.name < key; });
  return it != entries_.end() && it->name == name ? &*it : nullptr;
}

}  // namespace recgpt
