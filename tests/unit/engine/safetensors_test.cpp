#include "engine/safetensors.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>

#include "tests/unit/engine/tiny_model_folder.h"

namespace recgpt {
namespace {

using testing::OwnedTensor;
using testing::TemporaryDirectory;

std::vector<std::byte> bytes_of(const std::string& text) {
  std::vector<std::byte> bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  return bytes;
}

// A file with `header` as its JSON header (declared length `header_length`, default its size) and
// `data_bytes` zero bytes of data.
std::vector<std::byte> file_with_header(const std::string& header, size_t data_bytes,
                                        std::optional<uint64_t> header_length = {}) {
  uint64_t length = header_length.value_or(header.size());
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes_of(prefix + header + std::string(data_bytes, '\0'));
}

Status parse_status(const std::vector<std::byte>& file) { return parse_safetensors(file).status(); }

std::vector<OwnedTensor> sample_tensors() {
  std::vector<OwnedTensor> tensors;
  tensors.push_back({"b.weight", DType::kBF16, {3}, std::vector<std::byte>(6, std::byte{0x3f})});
  std::vector<std::byte> floats(2 * 2 * 4);
  for (size_t i = 0; i < floats.size(); ++i) floats[i] = static_cast<std::byte>(i);
  tensors.push_back({"a.weight", DType::kF32, {2, 2}, floats});
  tensors.push_back({"empty", DType::kF16, {0, 5}, {}});
  return tensors;
}

TEST_CASE("safetensors written then parsed give back every tensor's dtype, shape and bytes") {
  TemporaryDirectory dir;
  std::vector<OwnedTensor> tensors = sample_tensors();
  REQUIRE(testing::write_tensors(dir.file("t.safetensors"), tensors).is_ok());

  auto file = SafetensorsFile::open(dir.file("t.safetensors"));
  REQUIRE(file.is_ok());
  REQUIRE(file->entries().size() == 3);
  CHECK(file->entries()[0].name == "a.weight");  // sorted by name
  for (const OwnedTensor& tensor : tensors) {
    const SafetensorsEntry* entry = file->find(tensor.name);
    REQUIRE(entry != nullptr);
    CHECK(entry->dtype == tensor.dtype);
    CHECK(entry->shape == tensor.shape);
    REQUIRE(entry->bytes.size() == tensor.bytes.size());
    CHECK(std::equal(entry->bytes.begin(), entry->bytes.end(), tensor.bytes.begin()));
  }
  CHECK(file->find("missing") == nullptr);
}

TEST_CASE("the safetensors header is padded with spaces to a cache-line aligned data section") {
  std::vector<OwnedTensor> tensors = sample_tensors();
  std::vector<SafetensorsTensor> views;
  for (const OwnedTensor& tensor : tensors) views.push_back(tensor.view());
  auto header = encode_safetensors_header(views);
  REQUIRE(header.is_ok());
  CHECK(header->size() % kSafetensorsDataAlignment == 0);
  CHECK(header->size() > 8 + 40);  // the JSON itself, not only padding
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<uint8_t>((*header)[i]);
  CHECK(length == header->size() - 8);
  CHECK(header->find("\"__metadata__\":{\"format\":\"pt\"}") != std::string::npos);
  CHECK(header->back() != '\0');
}

TEST_CASE("the safetensors writer refuses byte counts that do not match the shape, and duplicate names") {
  OwnedTensor wrong{"w", DType::kF32, {3}, std::vector<std::byte>(8)};
  std::vector<SafetensorsTensor> views = {wrong.view()};
  auto header = encode_safetensors_header(views);
  REQUIRE_FALSE(header.is_ok());
  CHECK(header.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(header.status().message(), Catch::Contains("'w'"));

  OwnedTensor good{"w", DType::kF32, {2}, std::vector<std::byte>(8)};
  views = {good.view(), good.view()};
  CHECK(encode_safetensors_header(views).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("a file shorter than the 8-byte header length is data_loss") {
  Status status = parse_status(bytes_of("abc"));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("3 bytes"));
}

TEST_CASE("a header length past the end of the file is data_loss") {
  Status status = parse_status(file_with_header("{}", 0, 1000));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("header length 1000 past the end"));
}

TEST_CASE("a header length over 100 MB is data_loss before anything is read") {
  Status status = parse_status(file_with_header("{}", 0, uint64_t{1} << 40));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("100 MB"));
}

TEST_CASE("a header that is not valid JSON is data_loss with the position") {
  Status status = parse_status(file_with_header("{\"a\": [1, 2", 0));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("not valid JSON at byte"));
  CHECK(parse_status(file_with_header("[1, 2]", 0)).code() == StatusCode::kDataLoss);
}

TEST_CASE("data offsets past the end of the data section are data_loss naming the tensor") {
  Status status = parse_status(file_with_header(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("'x'") && Catch::Contains("past the data section"));
}

TEST_CASE("data offsets that disagree with the shape are data_loss naming both") {
  Status status = parse_status(file_with_header(R"({"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("'x'") && Catch::Contains("[3]") && Catch::Contains("needs 6"));
  status = parse_status(file_with_header(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 8));
  CHECK_THAT(status.message(), Catch::Contains("begin after end"));
}

TEST_CASE("shapes whose byte count overflows or that have negative dimensions are data_loss") {
  Status status = parse_status(file_with_header(
      R"({"x":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})", 0));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("overflows"));
  status = parse_status(file_with_header(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("shape holds -1"));
}

TEST_CASE("a deeply nested value where a number belongs is data_loss, not a stack overflow") {
  std::string nested = std::string(300000, '[') + std::string(300000, ']');
  Status status =
      parse_status(file_with_header(R"({"x":{"dtype":"F32","shape":[)" + nested + R"(],"data_offsets":[0,0]}})", 0));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("shape holds a array"));
}

TEST_CASE("well-formed tensors of unsupported dtypes are unimplemented naming tensor and dtype") {
  for (std::string dtype : {"I8", "F64"}) {
    std::string header = R"({"ids":{"dtype":")" + dtype + R"(","shape":[1],"data_offsets":[0,8]}})";
    Status status = parse_status(file_with_header(header, 8));
    CHECK(status.code() == StatusCode::kUnimplemented);
    CHECK_THAT(status.message(), Catch::Contains("'ids'") && Catch::Contains(dtype));
  }
  Status status = parse_status(file_with_header(R"({"ids":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 8));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("unknown dtype 'Q9'"));
}

TEST_CASE("overlapping tensors are data_loss naming both") {
  Status status = parse_status(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                                8));
  CHECK(status.code() == StatusCode::kDataLoss);
  CHECK_THAT(status.message(), Catch::Contains("'a' and 'b' overlap"));
}

TEST_CASE("string metadata is skipped and non-string metadata is data_loss") {
  auto parsed = parse_safetensors(file_with_header(R"({"__metadata__":{"format":"pt"}})", 0));
  REQUIRE(parsed.is_ok());
  CHECK(parsed->empty());
  CHECK(parse_status(file_with_header(R"({"__metadata__":{"n":1}})", 0)).code() == StatusCode::kDataLoss);
}

TEST_CASE("a truncated safetensors file is data_loss naming the file") {
  TemporaryDirectory dir;
  std::string path = dir.file("t.safetensors");
  REQUIRE(testing::write_tensors(path, sample_tensors()).is_ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  auto file = SafetensorsFile::open(path);
  REQUIRE_FALSE(file.is_ok());
  CHECK(file.status().code() == StatusCode::kDataLoss);
  CHECK_THAT(file.status().message(), Catch::Contains(path));
}

TEST_CASE("opening a safetensors file that does not exist is not_found") {
  CHECK(SafetensorsFile::open("/nonexistent/x.safetensors").status().code() == StatusCode::kNotFound);
}

}  // namespace
}  // namespace recgpt
