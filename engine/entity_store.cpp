#include "engine/entity_store.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "engine/block_hash.h"

namespace recgpt {
namespace {

static_assert(std::endian::native == std::endian::little, "the entity store format is read in place: little-endian");

constexpr char kMagic[8] = {'R', 'G', 'E', 'N', 'T', 'I', 'T', 'Y'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kHeaderBytes = 64;
constexpr uint64_t kVectorAlignment = 64;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t dim;
  uint64_t count;
  uint64_t num_slots;
  uint64_t table_offset;
  uint64_t strings_offset;
  uint64_t strings_bytes;
  uint64_t vectors_offset;
};
static_assert(sizeof(Header) == kHeaderBytes);

struct Slot {
  uint64_t hash;
  uint64_t string_offset;
  uint32_t string_length;
  uint32_t entity_plus_one;
};
static_assert(sizeof(Slot) == 24);

uint64_t round_up(uint64_t value, uint64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Builds the open-addressing table; kInvalidArgument on a duplicate id.
Result<std::vector<Slot>> build_table(std::span<const std::string> ids, uint64_t num_slots) {
  std::vector<Slot> slots(num_slots, Slot{0, 0, 0, 0});
  const uint64_t mask = num_slots - 1;
  uint64_t string_offset = 0;
  for (size_t entity = 0; entity < ids.size(); ++entity) {
    const std::string& id = ids[entity];
    uint64_t hash = xxhash64(id);
    uint64_t index = hash & mask;
    while (slots[index].entity_plus_one != 0) {
      const Slot& slot = slots[index];
      if (slot.hash == hash && ids[slot.entity_plus_one - 1] == id) {
        return invalid_argument("duplicate entity id '" + id + "' (entities " +
                                std::to_string(slot.entity_plus_one - 1) + " and " + std::to_string(entity) + ")");
      }
      index = (index + 1) & mask;
    }
    slots[index] = Slot{hash, string_offset, static_cast<uint32_t>(id.size()), static_cast<uint32_t>(entity + 1)};
    string_offset += id.size();
  }
  return slots;
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

Status write_all(std::FILE* file, const void* data, size_t bytes, const std::string& path) {
  if (bytes == 0 || std::fwrite(data, 1, bytes, file) == bytes) return Status::ok();
  return io_error("cannot write '" + path + "'");
}

Status write_file(const std::string& path, const Header& header, const std::vector<Slot>& slots,
                  std::span<const std::string> ids, std::span<const float> vectors) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "wb"));
  if (!file) return io_error("cannot create '" + path + "': " + std::strerror(errno));
  RECGPT_RETURN_IF_ERROR(write_all(file.get(), &header, sizeof(header), path));
  RECGPT_RETURN_IF_ERROR(write_all(file.get(), slots.data(), slots.size() * sizeof(Slot), path));
  for (const std::string& id : ids) RECGPT_RETURN_IF_ERROR(write_all(file.get(), id.data(), id.size(), path));
  std::vector<char> padding(header.vectors_offset - header.strings_offset - header.strings_bytes, 0);
  RECGPT_RETURN_IF_ERROR(write_all(file.get(), padding.data(), padding.size(), path));
  RECGPT_RETURN_IF_ERROR(write_all(file.get(), vectors.data(), vectors.size_bytes(), path));
  if (std::fclose(file.release()) != 0) return io_error("cannot write '" + path + "'");
  return Status::ok();
}

Status corrupt(const std::string& path, const std::string& what) {
  return data_loss("entity store '" + path + "' is corrupt: " + what);
}

}  // namespace

Status write_entity_store(const std::string& path, int dim, std::span<const std::string> ids,
                          std::span<const float> vectors) {
  if (dim < 1) return invalid_argument("entity store dim must be >= 1, got " + std::to_string(dim));
  if (ids.size() >= std::numeric_limits<uint32_t>::max()) {
    return invalid_argument("entity store holds fewer than 2^32 - 1 entities, got " + std::to_string(ids.size()));
  }
  if (vectors.size() != ids.size() * static_cast<size_t>(dim)) {
    return invalid_argument("entity store of " + std::to_string(ids.size()) + " ids and dim " + std::to_string(dim) +
                            " needs " + std::to_string(ids.size() * dim) + " floats, got " +
                            std::to_string(vectors.size()));
  }
  uint64_t strings_bytes = 0;
  for (const std::string& id : ids) {
    if (id.size() > std::numeric_limits<uint32_t>::max()) return invalid_argument("entity id longer than 4 GiB");
    strings_bytes += id.size();
  }
  const uint64_t num_slots = std::bit_ceil(std::max<uint64_t>(1, 2 * ids.size()));
  RECGPT_ASSIGN_OR_RETURN(std::vector<Slot> slots, build_table(ids, num_slots));

  Header header{};
  std::memcpy(header.magic, kMagic, sizeof(kMagic));
  header.version = kVersion;
  header.dim = static_cast<uint32_t>(dim);
  header.count = ids.size();
  header.num_slots = num_slots;
  header.table_offset = kHeaderBytes;
  header.strings_offset = kHeaderBytes + num_slots * sizeof(Slot);
  header.strings_bytes = strings_bytes;
  header.vectors_offset = round_up(header.strings_offset + strings_bytes, kVectorAlignment);

  const std::string temporary_path = path + ".tmp";
  Status written = write_file(temporary_path, header, slots, ids, vectors);
  if (written.is_ok() && std::rename(temporary_path.c_str(), path.c_str()) != 0) {
    written = io_error("cannot rename '" + temporary_path + "' to '" + path + "': " + std::strerror(errno));
  }
  if (!written.is_ok()) std::remove(temporary_path.c_str());
  return written;
}

Result<EntityStore> EntityStore::open(const std::string& path) {
  RECGPT_ASSIGN_OR_RETURN(MappedFile file, MappedFile::open(path));
  const uint64_t file_bytes = file.size();
  if (file_bytes < kHeaderBytes) return corrupt(path, "shorter than its 64-byte header");
  Header header;
  std::memcpy(&header, file.data(), sizeof(header));
  if (std::memcmp(header.magic, kMagic, sizeof(kMagic)) != 0) return corrupt(path, "bad magic (expected RGENTITY)");
  if (header.version != kVersion) {
    return corrupt(path, "version " + std::to_string(header.version) + ", this build reads version 1");
  }
  if (header.dim < 1) return corrupt(path, "dim is 0");
  if (header.count >= std::numeric_limits<uint32_t>::max()) return corrupt(path, "count out of range");
  if (!std::has_single_bit(header.num_slots) || header.num_slots <= header.count ||
      header.num_slots > file_bytes / sizeof(Slot)) {
    return corrupt(path, "num_slots " + std::to_string(header.num_slots) + " is not a power of two above count " +
                             std::to_string(header.count) + " that fits the file");
  }
  if (header.table_offset != kHeaderBytes) return corrupt(path, "table_offset is not 64");
  if (header.strings_offset != kHeaderBytes + header.num_slots * sizeof(Slot) || header.strings_offset > file_bytes ||
      header.strings_bytes > file_bytes - header.strings_offset) {
    return corrupt(path, "string pool outside the file (truncated?)");
  }
  if (header.vectors_offset % kVectorAlignment != 0 ||
      header.vectors_offset < header.strings_offset + header.strings_bytes || header.vectors_offset > file_bytes ||
      header.count * header.dim > (file_bytes - header.vectors_offset) / sizeof(float)) {
    return corrupt(path, "vector area outside the file (truncated?)");
  }
  EntityStore store;
  store.file_ = std::move(file);
  store.dim_ = static_cast<int>(header.dim);
  store.count_ = static_cast<int64_t>(header.count);
  store.num_slots_ = header.num_slots;
  store.table_offset_ = header.table_offset;
  store.strings_offset_ = header.strings_offset;
  store.strings_bytes_ = header.strings_bytes;
  store.vectors_offset_ = header.vectors_offset;
  return store;
}

std::optional<std::span<const float>> EntityStore::find(std::string_view id) const {
  const std::byte* base = file_.data();
  const uint64_t hash = xxhash64(id);
  const uint64_t mask = num_slots_ - 1;
  uint64_t index = hash & mask;
  for (uint64_t probe = 0; probe < num_slots_; ++probe, index = (index + 1) & mask) {
    Slot slot;
    std::memcpy(&slot, base + table_offset_ + index * sizeof(Slot), sizeof(slot));
    if (slot.entity_plus_one == 0) return std::nullopt;
    if (slot.hash != hash || slot.string_length != id.size()) continue;
    bool in_bounds = slot.string_offset <= strings_bytes_ &&
                     slot.string_length <= strings_bytes_ - slot.string_offset &&
                     slot.entity_plus_one <= static_cast<uint64_t>(count_);
    if (!in_bounds) continue;  // corrupt slot: never follow it
    if (!id.empty() && std::memcmp(base + strings_offset_ + slot.string_offset, id.data(), id.size()) != 0) continue;
    const uint64_t entity = slot.entity_plus_one - 1;
    const auto* vector =
        reinterpret_cast<const float*>(base + vectors_offset_ + entity * static_cast<uint64_t>(dim_) * sizeof(float));
    return std::span<const float>(vector, static_cast<size_t>(dim_));
  }
  return std::nullopt;
}

}  // namespace recgpt
