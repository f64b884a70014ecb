// Blocks a decode node keeps out of reuse while a prefill node may still write them. The router may give up on a
// prefill attempt (its node stopped answering) and retry, prefill locally, or cancel the call, while that attempt
// still pushes KV into the reservation's blocks; a push is one-sided (kv_transfer cannot fence a live writer), so
// the blocks must not go to another sequence until the attempt ended here or could no longer write.
//
// A fence holds one extra reference (BlockManager::add_ref) on each of its blocks, so whatever else ends (the
// reservation, the sequence decoding from it) the blocks stay used until the fence is released or lapses. Not
// thread-safe: owned by the decode node's engine thread, like the BlockManager.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "decode_node/reservation_table.h"
#include "engine/block_manager.h"

namespace recgpt::decode {

class WriteFences {
 public:
  explicit WriteFences(BlockManager& blocks) : blocks_(blocks) {}
  ~WriteFences();  // releases every fence
  WriteFences(const WriteFences&) = delete;
  WriteFences& operator=(const WriteFences&) = delete;

  // Holds `blocks` (used blocks) until release(id) or `lapses`. Preconditions (checked): `id` not held.
  void hold(uint64_t id, std::span<const int32_t> blocks, Clock::time_point lapses);
  // false when `id` is not held (never, released, or lapsed).
  bool release(uint64_t id);
  // Releases the fences whose time came; how many.
  int64_t release_lapsed(Clock::time_point now);

  // The earliest lapse among held fences, or max() when none.
  Clock::time_point next_lapse() const;
  int64_t held_blocks() const { return held_blocks_; }
  size_t size() const { return fences_.size(); }

 private:
  struct Fence {
    std::vector<int32_t> blocks;
    Clock::time_point lapses;
  };
  void drop(Fence& fence);

  BlockManager& blocks_;
  std::unordered_map<uint64_t, Fence> fences_;
  int64_t held_blocks_ = 0;
};

}  // namespace recgpt::decode
