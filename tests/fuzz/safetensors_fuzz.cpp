// Fuzz target: parse_safetensors and parse_model_config on arbitrary bytes. Beyond "no crash, no
// sanitizer finding", it checks properties of what they accept: every tensor's bytes lie inside the input
// and match its shape, and both formats survive a write-then-parse round trip unchanged.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/status.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"

namespace recgpt {
namespace {

void check_entries(const std::vector<SafetensorsEntry>& entries, std::span<const std::byte> input) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsEntry& entry = entries[i];
    if (i > 0) RECGPT_CHECK(entries[i - 1].name < entry.name);
    uint64_t elements = 1;
    for (int64_t dim : entry.shape) {
      RECGPT_CHECK(dim >= 0);
      elements *= static_cast<uint64_t>(dim);
    }
    RECGPT_CHECK(entry.bytes.size() == elements * dtype_size(entry.dtype));
    if (entry.bytes.empty()) continue;
    RECGPT_CHECK(entry.bytes.data() >= input.data());
    RECGPT_CHECK(entry.bytes.data() + entry.bytes.size() <= input.data() + input.size());
    volatile std::byte first = entry.bytes.front();  // ASan checks these reads too
    volatile std::byte last = entry.bytes.back();
    (void)first;
    (void)last;
  }
}

void check_safetensors_round_trip(const std::vector<SafetensorsEntry>& entries) {
  auto header = encode_safetensors_header(entries);
  RECGPT_CHECK_MSG(header.is_ok(), header.status().to_string());
  std::string file = *header;
  for (const SafetensorsEntry& entry : entries) {
    file.append(reinterpret_cast<const char*>(entry.bytes.data()), entry.bytes.size());
  }
  auto reparsed = parse_safetensors(std::as_bytes(std::span(file)));
  RECGPT_CHECK_MSG(reparsed.is_ok(), reparsed.status().to_string());
  RECGPT_CHECK(reparsed->size() == entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsEntry& before = entries[i];
    const SafetensorsEntry& after = (*reparsed)[i];
    RECGPT_CHECK(before.name == after.name && before.dtype == after.dtype && before.shape == after.shape);
    RECGPT_CHECK(before.bytes.size() == after.bytes.size());
    RECGPT_CHECK(before.bytes.empty() ||
                 std::memcmp(before.bytes.data(), after.bytes.data(), before.bytes.size()) == 0);
  }
}

void check_config_round_trip(const ModelConfig& config) {
  std::string text = model_config_to_json(config);
  auto reparsed = parse_model_config(text);
  RECGPT_CHECK_MSG(reparsed.is_ok(), reparsed.status().to_string());
  RECGPT_CHECK(model_config_to_json(*reparsed) == text);
}

void check_safetensors(std::span<const std::byte> file) {
  auto entries = parse_safetensors(file);
  if (!entries.is_ok()) return;
  check_entries(*entries, file);
  check_safetensors_round_trip(*entries);
}

// The input read as "<header JSON> NUL <data>" and given its true length prefix: byte mutations inside
// the header then keep the prefix consistent and reach the per-tensor checks instead of stopping at
// "header length past the end". JSON text cannot hold a raw NUL, so the split is unambiguous.
std::string framed_as_safetensors(std::span<const std::byte> input) {
  auto nul = std::find(input.begin(), input.end(), std::byte{0});
  size_t header_bytes = static_cast<size_t>(nul - input.begin());
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((static_cast<uint64_t>(header_bytes) >> (8 * i)) & 0xff);
  file.append(reinterpret_cast<const char*>(input.data()), header_bytes);
  if (nul != input.end()) file.append(reinterpret_cast<const char*>(&*nul) + 1, input.end() - nul - 1);
  return file;
}

}  // namespace
}  // namespace recgpt

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  recgpt::check_safetensors(bytes);
  std::string framed = recgpt::framed_as_safetensors(bytes);
  std::vector<std::byte> exact_copy(framed.size());  // exact size: ASan sees reads past the end
  std::memcpy(exact_copy.data(), framed.data(), framed.size());
  recgpt::check_safetensors(exact_copy);
  auto config = recgpt::parse_model_config(std::string_view(reinterpret_cast<const char*>(data), size));
  if (config.is_ok()) recgpt::check_config_round_trip(*config);
  return 0;
}
