#include "engine/npy.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <vector>

namespace recgpt {
namespace {

std::string temporary_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("recgpt_npy_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::string read_all(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A version 1.0 file with `header` (unpadded) and `data_bytes` zero bytes of data.
std::string npy_v1(const std::string& header, size_t data_bytes) {
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\0';
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  return bytes + header + std::string(data_bytes, '\0');
}

TEST_CASE("npy float32 arrays round trip with their shape") {
  const std::string path = temporary_file("round_trip.npy");
  std::vector<int64_t> shape = {2, 3, 4};
  std::vector<float> data(24);
  for (int i = 0; i < 24; ++i) data[i] = 0.25f * i - 3.0f;
  REQUIRE(write_npy_f32(path, shape, data).is_ok());

  std::string bytes = read_all(path);
  CHECK(bytes.size() == 128 + 24 * 4);  // header padded to 64 bytes, as numpy.save does
  CHECK(bytes.find("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }") == 10);

  auto array = read_npy_f32(path);
  REQUIRE(array.is_ok());
  CHECK(array->shape == shape);
  CHECK(array->data == data);
  std::filesystem::remove(path);
}

TEST_CASE("npy scalars, vectors and empty arrays round trip") {
  const std::string path = temporary_file("shapes.npy");
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{}, std::vector<int64_t>{5}, std::vector<int64_t>{0, 3}}) {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    std::vector<float> data(static_cast<size_t>(count), 1.5f);
    REQUIRE(write_npy_f32(path, shape, data).is_ok());
    auto array = read_npy_f32(path);
    REQUIRE(array.is_ok());
    CHECK(array->shape == shape);
    CHECK(array->data == data);
  }
  std::filesystem::remove(path);
}

TEST_CASE("writing npy rejects a shape that does not match the data") {
  const std::string path = temporary_file("mismatch.npy");
  std::vector<int64_t> shape = {2, 2};
  CHECK(write_npy_f32(path, shape, std::vector<float>(3)).code() == StatusCode::kInvalidArgument);
  std::vector<int64_t> negative = {-1, 2};
  CHECK(write_npy_f32(path, negative, std::vector<float>(2)).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("npy headers written by other tools parse: double quotes, no trailing comma, version 2") {
  const std::string path = temporary_file("foreign.npy");
  write_all(path, npy_v1("{\"shape\": (2,3), \"fortran_order\": False, \"descr\": \"<f4\"}\n", 24));
  auto array = read_npy_f32(path);
  REQUIRE(array.is_ok());
  CHECK(array->shape == std::vector<int64_t>{2, 3});

  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n";
  std::string v2 = "\x93NUMPY";
  v2 += std::string("\x02\x00", 2);
  v2 += static_cast<char>(header.size());
  v2 += std::string(3, '\0');
  write_all(path, v2 + header + std::string(4, '\0'));
  REQUIRE(read_npy_f32(path).is_ok());
  std::filesystem::remove(path);
}

TEST_CASE("corrupt npy files are kDataLoss, other dtypes kUnimplemented naming them") {
  const std::string path = temporary_file("corrupt.npy");
  auto code_of = [&](const std::string& bytes) {
    write_all(path, bytes);
    return read_npy_f32(path).status().code();
  };
  const std::string good_header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
  CHECK(code_of(npy_v1(good_header, 8)) == StatusCode::kOk);
  CHECK(code_of("") == StatusCode::kDataLoss);
  CHECK(code_of("PK\x03\x04 not numpy at all") == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1(good_header, 8).substr(0, 20)) == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1(good_header, 7)) == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1(good_header, 12)) == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1("{'descr': '<f4', 'shape': (2,), }\n", 8)) == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 8)) == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", 8)) == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8)) == StatusCode::kDataLoss);
  CHECK(code_of(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", 8)) ==
        StatusCode::kDataLoss);

  write_all(path, npy_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16));
  Status doubles = read_npy_f32(path).status();
  CHECK(doubles.code() == StatusCode::kUnimplemented);
  CHECK_THAT(doubles.message(), Catch::Contains("'<f8'"));
  CHECK(code_of(npy_v1("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", 8)) ==
        StatusCode::kUnimplemented);
  CHECK(code_of(npy_v1("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n", 8)) == StatusCode::kUnimplemented);
  CHECK(code_of(npy_v1("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (2,), }\n", 16)) ==
        StatusCode::kUnimplemented);
  std::filesystem::remove(path);
  CHECK(read_npy_f32(path).status().code() == StatusCode::kNotFound);
}

}  // namespace
}  // namespace recgpt
