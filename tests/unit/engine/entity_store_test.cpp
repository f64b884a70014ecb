#include "engine/entity_store.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

namespace recgpt {
namespace {

// A fresh directory under the system temp dir, removed with its files at scope exit.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("recgpt_entity_store_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TemporaryDirectory() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
void patch(std::vector<char>& bytes, size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(value));
}

TEST_CASE("entity store round trip: every id finds its vector, others are absent") {
  TemporaryDirectory directory;
  const std::string path = directory.file("small.entities");
  std::vector<std::string> ids = {"item-1", "item-2", "", "товар-3"};
  std::vector<float> vectors = {1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4};
  REQUIRE(write_entity_store(path, 3, ids, vectors).is_ok());

  auto store = EntityStore::open(path);
  REQUIRE(store.is_ok());
  CHECK(store->dim() == 3);
  CHECK(store->size() == 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto vector = store->find(ids[i]);
    REQUIRE(vector.has_value());
    CHECK(std::vector<float>(vector->begin(), vector->end()) ==
          std::vector<float>(vectors.begin() + 3 * i, vectors.begin() + 3 * i + 3));
    CHECK(reinterpret_cast<uintptr_t>(vector->data()) % alignof(float) == 0);
  }
  CHECK_FALSE(store->find("item-3").has_value());
  CHECK_FALSE(store->find("item-").has_value());
}

TEST_CASE("an empty entity store opens and finds nothing") {
  TemporaryDirectory directory;
  const std::string path = directory.file("empty.entities");
  REQUIRE(write_entity_store(path, 4, {}, {}).is_ok());
  auto store = EntityStore::open(path);
  REQUIRE(store.is_ok());
  CHECK(store->size() == 0);
  CHECK_FALSE(store->find("anything").has_value());
}

TEST_CASE("writing an entity store rejects duplicate ids and mismatched sizes") {
  TemporaryDirectory directory;
  const std::string path = directory.file("bad.entities");
  std::vector<std::string> ids = {"a", "b", "a"};
  std::vector<float> vectors(6, 0.0f);
  Status duplicate = write_entity_store(path, 2, ids, vectors);
  CHECK(duplicate.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(duplicate.message(), Catch::Contains("duplicate entity id 'a'"));
  CHECK_FALSE(std::filesystem::exists(path));

  std::vector<std::string> two = {"a", "b"};
  CHECK(write_entity_store(path, 2, two, std::vector<float>(5)).code() == StatusCode::kInvalidArgument);
  CHECK(write_entity_store(path, 0, two, {}).code() == StatusCode::kInvalidArgument);
  CHECK(write_entity_store(directory.file("missing/dir/x"), 1, two, std::vector<float>(2)).code() ==
        StatusCode::kIoError);
}

TEST_CASE("a million entities: sampled ids find their vectors, absent ids are absent") {
  constexpr int64_t kCount = 1'000'000;
  constexpr int kDim = 8;
  TemporaryDirectory directory;
  const std::string path = directory.file("million.entities");
  std::vector<std::string> ids;
  ids.reserve(kCount);
  std::vector<float> vectors(kCount * kDim);
  for (int64_t i = 0; i < kCount; ++i) {
    ids.push_back("entity-" + std::to_string(i));
    for (int j = 0; j < kDim; ++j) vectors[i * kDim + j] = static_cast<float>(i * kDim + j);
  }
  REQUIRE(write_entity_store(path, kDim, ids, vectors).is_ok());
  ids.clear();
  vectors.clear();

  auto store = EntityStore::open(path);
  REQUIRE(store.is_ok());
  REQUIRE(store->size() == kCount);
  std::mt19937_64 random(7);
  for (int probe = 0; probe < 50'000; ++probe) {
    int64_t i = static_cast<int64_t>(random() % kCount);
    auto vector = store->find("entity-" + std::to_string(i));
    REQUIRE(vector.has_value());
    REQUIRE(vector->size() == kDim);
    for (int j = 0; j < kDim; ++j) REQUIRE((*vector)[j] == static_cast<float>(i * kDim + j));
    REQUIRE_FALSE(store->find("entity-" + std::to_string(kCount + i)).has_value());
    REQUIRE_FALSE(store->find("Entity-" + std::to_string(i)).has_value());
  }
}

TEST_CASE("truncated or corrupt entity store headers are kDataLoss") {
  TemporaryDirectory directory;
  const std::string path = directory.file("good.entities");
  std::vector<std::string> ids = {"x", "y", "z"};
  std::vector<float> vectors(3 * 16, 0.5f);
  REQUIRE(write_entity_store(path, 16, ids, vectors).is_ok());
  const std::vector<char> good = read_bytes(path);
  const std::string broken = directory.file("broken.entities");

  auto expect_data_loss = [&](const std::vector<char>& bytes, const char* why) {
    INFO(why);
    write_bytes(broken, bytes);
    auto store = EntityStore::open(broken);
    REQUIRE_FALSE(store.is_ok());
    CHECK(store.status().code() == StatusCode::kDataLoss);
  };
  for (size_t length : {size_t{0}, size_t{10}, size_t{63}, size_t{64}, good.size() / 2, good.size() - 1}) {
    expect_data_loss(std::vector<char>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length)), "truncated");
  }
  std::vector<char> bytes = good;
  bytes[0] = 'X';
  expect_data_loss(bytes, "magic");
  bytes = good;
  patch<uint32_t>(bytes, 8, 2);
  expect_data_loss(bytes, "version");
  bytes = good;
  patch<uint32_t>(bytes, 12, 0);
  expect_data_loss(bytes, "dim 0");
  bytes = good;
  patch<uint32_t>(bytes, 12, 1u << 30);
  expect_data_loss(bytes, "dim too large for the file");
  bytes = good;
  patch<uint64_t>(bytes, 24, 6);
  expect_data_loss(bytes, "num_slots not a power of two");
  bytes = good;
  patch<uint64_t>(bytes, 24, uint64_t{1} << 62);
  expect_data_loss(bytes, "num_slots huge");
  bytes = good;
  patch<uint64_t>(bytes, 48, ~uint64_t{0} - 8);
  expect_data_loss(bytes, "strings_bytes overflowing");
  bytes = good;
  patch<uint64_t>(bytes, 56, 65);
  expect_data_loss(bytes, "vectors_offset unaligned");
  CHECK(EntityStore::open(directory.file("none")).status().code() == StatusCode::kNotFound);
}

TEST_CASE("lookups in a store with a garbage hash table never read outside the map") {
  TemporaryDirectory directory;
  const std::string path = directory.file("table.entities");
  std::vector<std::string> ids;
  for (int i = 0; i < 100; ++i) ids.push_back("id" + std::to_string(i));
  REQUIRE(write_entity_store(path, 4, ids, std::vector<float>(400, 1.0f)).is_ok());
  std::vector<char> bytes = read_bytes(path);
  const size_t num_slots = 256;
  std::mt19937 random(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<char> garbage = bytes;
    for (size_t offset = 64; offset < 64 + 24 * num_slots; ++offset) garbage[offset] = static_cast<char>(random());
    if (trial % 2 == 0) {
      // Keep hashes, so probes do reach the garbage offsets and lengths.
      for (size_t slot = 0; slot < num_slots; ++slot) std::memcpy(&garbage[64 + 24 * slot], &bytes[64 + 24 * slot], 8);
    }
    write_bytes(path, garbage);
    auto store = EntityStore::open(path);
    REQUIRE(store.is_ok());
    for (const std::string& id : ids) {
      auto vector = store->find(id);
      if (vector) CHECK(vector->size() == 4);
    }
  }
}

}  // namespace
}  // namespace recgpt
