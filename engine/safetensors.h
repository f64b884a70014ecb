// The safetensors file format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}},
// then the data section that the offsets index. Only F32, BF16 and F16 tensors are supported.
//
// The parser trusts nothing in the bytes (it is fuzzed, see tests/fuzz/safetensors_fuzz.cpp): every
// length, offset and shape is checked, with overflow-checked arithmetic, before any span is formed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"
#include "engine/dtype.h"

namespace recgpt {

// A named tensor whose bytes (row-major, little-endian, product(shape) * dtype_size(dtype) of them) live in
// memory owned by someone else: the file being parsed, or the caller of write_safetensors.
struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

// A tensor found by parse_safetensors; `bytes` points into the parsed buffer. Not necessarily aligned to
// dtype_size(dtype) when the writer did not align its data section.
using SafetensorsEntry = SafetensorsTensor;

// Parses a whole safetensors file held in memory. Entries are sorted by name. Corrupt or truncated input is
// kDataLoss naming the tensor at fault; a well-formed tensor of another dtype (I8, F64, ...) is
// kUnimplemented naming the tensor and its dtype.
Result<std::vector<SafetensorsEntry>> parse_safetensors(std::span<const std::byte> file_bytes);

// Where the data section of the files we write starts: a cache line. The format has no holes between tensors,
// so a tensor is aligned when the ones before it are whole cache lines (every matrix of the presets is). Hugging
// Face's writer aligns to 8 only; weights 40 bytes off a line decode ~7% slower here (docs/benchmarks.md), even
// with the kernels' peel. A multiple of 8, so readers that expect 8-byte alignment still find it.
inline constexpr size_t kSafetensorsDataAlignment = 64;

// The first 8 + N bytes of a safetensors file for `tensors`, whose data follows in the order given. The
// JSON header carries {"__metadata__": {"format": "pt"}} and is padded with spaces so the data section
// starts kSafetensorsDataAlignment-aligned. kInvalidArgument when a tensor's byte count does not match its
// shape or two tensors share a name.
Result<std::string> encode_safetensors_header(std::span<const SafetensorsTensor> tensors);

// Writes a safetensors file (header, then each tensor's bytes in order), then drops it from the page cache
// (written out first) so that the first reader maps it in large folios.
Status write_safetensors(const std::string& path, std::span<const SafetensorsTensor> tensors);

// An opened safetensors file: the memory map and the entries pointing into it. Move-only; entries stay
// valid while this object lives (moving it does not move the mapping).
class SafetensorsFile {
 public:
  // Errors name `path`: kNotFound / kIoError from the file system, then those of parse_safetensors.
  static Result<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  // The whole mapped file.
  std::span<const std::byte> bytes() const { return file_.bytes(); }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // The entry called `name`, or nullptr.
  const SafetensorsEntry* find(std::string_view name) const;

 private:
  MappedFile file_;
  std::vector<SafetensorsEntry> entries_;
};

}  // namespace recgpt
