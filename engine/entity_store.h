// A read-only, memory-mapped table from entity id (string) to a float32 vector of fixed dim: the entity
// embeddings the adaptor feeds into prompts. O(1) lookups; a million entities cost no RAM until looked up.
//
// File format, version 1. All integers little-endian; offsets are bytes from the start of the file.
//
//   header (64 bytes)
//     0  char[8]  magic "RGENTITY"
//     8  uint32   version = 1
//    12  uint32   dim                  floats per vector, >= 1
//    16  uint64   count                entities, < 2^32
//    24  uint64   num_slots            hash table slots, a power of two > count
//    32  uint64   table_offset         = 64
//    40  uint64   strings_offset       = table_offset + 24 * num_slots
//    48  uint64   strings_bytes
//    56  uint64   vectors_offset       >= strings_offset + strings_bytes, a multiple of 64
//   hash table: num_slots slots of 24 bytes, open addressing with linear probing
//     0  uint64   hash                 xxhash64(id bytes, seed 0) (engine/block_hash.h)
//     8  uint64   string_offset        id bytes at strings_offset + string_offset
//    16  uint32   string_length
//    20  uint32   entity_plus_one      0 = empty slot; else the entity's index + 1
//     an id's probe sequence starts at slot (hash & (num_slots - 1)) and ends at an empty slot.
//   string pool: the ids' UTF-8 bytes, concatenated, no terminators
//   zero padding up to vectors_offset
//   vectors: float32 [count, dim], IEEE-754 little-endian, entity i at vectors_offset + 4 * dim * i
//
// open() validates the header and that every area lies inside the file (kDataLoss otherwise). Slots are
// validated lazily by find(): a slot pointing outside its area reads as a non-match, so a corrupt table
// can give wrong answers but never reads outside the map. Only little-endian hosts are supported.
//
// Threading: EntityStore is immutable after open(); find() may be called from any number of threads.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/mapped_file.h"
#include "common/status.h"

namespace recgpt {

// Writes `ids` and their `vectors` [ids.size(), dim] to `path` (through a temporary file renamed into
// place). kInvalidArgument for dim < 1, a vectors size other than ids.size() * dim, or a duplicate id
// (named); kIoError when the file cannot be written.
Status write_entity_store(const std::string& path, int dim, std::span<const std::string> ids,
                          std::span<const float> vectors);

class EntityStore {
 public:
  // kNotFound / kIoError when the file cannot be opened or mapped; kDataLoss naming the field when it is
  // not a valid entity store (bad magic, unsupported version, areas out of bounds, truncated).
  static Result<EntityStore> open(const std::string& path);

  int dim() const { return dim_; }
  int64_t size() const { return count_; }
  const std::string& path() const { return file_.path(); }

  // The vector [dim] of `id`, pointing into the map (valid while this store lives), or nullopt.
  std::optional<std::span<const float>> find(std::string_view id) const;

 private:
  EntityStore() = default;

  MappedFile file_;
  int dim_ = 0;
  int64_t count_ = 0;
  uint64_t num_slots_ = 0;
  uint64_t table_offset_ = 0;
  uint64_t strings_offset_ = 0;
  uint64_t strings_bytes_ = 0;
  uint64_t vectors_offset_ = 0;
};

}  // namespace recgpt
