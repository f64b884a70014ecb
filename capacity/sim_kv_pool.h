// The KV pools of simulated nodes, in blocks: what the capacity simulator needs of engine/block_manager.h and
// decode_node/reservation_table.h without their memory. A block holding a full prompt block is known by its
// chain hash (engine/block_hash.h) and shared by every sequence whose prompt starts the same; other blocks
// (the last partial prompt block, the generation budget) are private to one sequence. A released hashed
// block stays cached, evictable least-recently-used first, until its room is needed.
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <list>
#include <span>
#include <unordered_set>

namespace recgpt::capacity {

// A bounded set of block hashes, least recently used evicted first (a prefill node's prefix cache).
class LruHashSet {
 public:
  explicit LruHashSet(int64_t capacity) : capacity_(capacity) {}

  // How many leading hashes are held (the first miss ends the prefix).
  int64_t held_prefix(std::span<const uint64_t> hashes) const;
  // Holds every hash, most recently used last; evicts down to capacity.
  void touch(std::span<const uint64_t> hashes);
  const std::unordered_set<uint64_t>& hashes() const { return held_; }

 private:
  int64_t capacity_;
  std::list<uint64_t> order_;  // least recently used first
  boost::unordered_flat_map<uint64_t, std::list<uint64_t>::iterator> where_;
  std::unordered_set<uint64_t> held_;
};

// A decode (or colocated) node's pool: reservations take blocks for prompt + budget, reusing held prefixes.
class SimKvPool {
 public:
  explicit SimKvPool(int64_t blocks) : blocks_(blocks) {}

  struct Reservation {
    int64_t held_blocks = 0;     // leading prompt blocks the pool already held
    int64_t private_blocks = 0;  // blocks only this sequence uses
  };
  // Blocks for `total_blocks` (prompt + generation budget) of which `hashes` are the prompt's full blocks. False
  // (and nothing taken) when the pool cannot make room even by evicting cached blocks.
  bool reserve(std::span<const uint64_t> hashes, int64_t total_blocks, Reservation& out);
  void release(std::span<const uint64_t> hashes, const Reservation& reservation);

  int64_t held_prefix(std::span<const uint64_t> hashes) const;
  int64_t blocks() const { return blocks_; }
  int64_t used_blocks() const { return static_cast<int64_t>(references_.size()) + private_blocks_; }
  int64_t cached_blocks() const { return static_cast<int64_t>(cached_order_.size()); }
  // Every hash the pool holds, referenced or cached (the router's prefix view).
  const std::unordered_set<uint64_t>& hashes() const { return held_; }

 private:
  void uncache(uint64_t hash);
  void evict_to_fit();

  int64_t blocks_;
  int64_t private_blocks_ = 0;
  boost::unordered_flat_map<uint64_t, int64_t> references_;  // hashed blocks in use, by sequences using each
  std::list<uint64_t> cached_order_;                         // unreferenced hashed blocks, least recently used first
  boost::unordered_flat_map<uint64_t, std::list<uint64_t>::iterator> cached_;
  std::unordered_set<uint64_t> held_;
};

}  // namespace recgpt::capacity
