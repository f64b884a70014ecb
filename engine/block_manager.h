// Reference-counted KV block ids with a prefix index: which blocks are free, which are used by sequences,
// and which hold a cached, reusable prefix.
//
// Every block id in [0, num_blocks) is in exactly one state:
//   free    ref count 0, not in the prefix index: handed out first by allocate().
//   used    ref count > 0 (one per sequence holding it); may or may not be in the prefix index.
//   cached  ref count 0 but in the prefix index: its KV is still valid and match_prefix() can revive it;
//           allocate() evicts cached blocks least-recently-released first when no free block is left.
//
// A sequence's life: match_prefix(hashes) → allocate(rest) → write KV → register_block(hash, block) as each
// block fills → release(blocks) at the end. Blocks are immutable once registered (the caller's contract).
//
// Holds no KV memory itself (KvCache owns that), so the capacity simulator can use it alone.
// Threading: not thread-safe; owned by the engine step thread.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace recgpt {

class PrefixIndexJournal;

struct PrefixMatch {
  std::vector<int32_t> blocks;  // the matched blocks, in prefix order; the caller owns one reference each
  int64_t num_blocks() const { return static_cast<int64_t>(blocks.size()); }
};

class BlockManager {
 public:
  // num_blocks must be in [0, INT32_MAX] (RECGPT_CHECK); KvCache validates user input first.
  explicit BlockManager(int64_t num_blocks);

  // `count` blocks with ref count 1, taken from the free pool, then by evicting cached blocks (LRU).
  // All or nothing: when fewer than `count` blocks are free or cached, returns kResourceExhausted naming the
  // requested and available counts, and changes nothing. count < 0 is kInvalidArgument; 0 gives {}.
  Result<std::vector<int32_t>> allocate(int64_t count);

  // One more holder of a used block. Aborts (RECGPT_CHECK) when the block is not used.
  void add_ref(int32_t block);

  // Drops one reference. At 0 a block in the prefix index becomes cached (most recently used), any other
  // becomes free. Aborts (RECGPT_CHECK) when the block is not used.
  void release(int32_t block);

  // Releases a sequence's blocks last to first, so that its tail blocks are evicted before its prefix,
  // which other sequences are more likely to share.
  void release(std::span<const int32_t> blocks);

  // The longest run of leading `block_hashes` in the prefix index; each returned block gets a reference
  // (cached blocks become used again). Counts hashes queried and blocks hit for metrics.
  PrefixMatch match_prefix(std::span<const uint64_t> block_hashes);

  // Indexes a full, used block under its chain hash (engine/block_hash.h). Returns true when the block is
  // now indexed under `hash`; false when another block already holds `hash` (the first one stays, this one
  // stays unindexed and becomes free on release). Aborts when the block is not used or is already indexed
  // under a different hash.
  bool register_block(uint64_t hash, int32_t block);

  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_blocks_.size()); }
  int64_t num_cached_blocks() const { return num_cached_; }
  int64_t num_used_blocks() const { return num_blocks() - num_free_blocks() - num_cached_blocks(); }
  // What allocate() can hand out: free plus cached.
  int64_t num_available_blocks() const { return num_free_blocks() + num_cached_blocks(); }

  // From now on, every hash indexed (register_block) and evicted goes to `journal` too (nullptr: none). The
  // journal must outlive the manager or be unset first.
  void set_journal(PrefixIndexJournal* journal) { journal_ = journal; }

  int32_t ref_count(int32_t block) const;
  bool is_registered(int32_t block) const;
  // The hash a registered block is indexed under. Aborts (RECGPT_CHECK) when it is not registered.
  uint64_t registered_hash(int32_t block) const;

  // Cumulative since construction: hashes passed to match_prefix, and blocks it returned.
  int64_t num_queried_blocks() const { return num_queried_blocks_; }
  int64_t num_hit_blocks() const { return num_hit_blocks_; }
  int64_t num_evicted_blocks() const { return num_evicted_blocks_; }

  // Verifies every internal invariant (each block in exactly one state, index and LRU list consistent)
  // in O(num_blocks); kInternal describing the first violation. For tests and debug builds.
  Status check_invariants() const;

 private:
  static constexpr int32_t kNone = -1;

  void check_block(int32_t block) const;
  int32_t take_block();  // one free or evicted block; the caller checked availability
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);

  std::vector<int32_t> ref_counts_;
  std::vector<uint64_t> block_hashes_;  // valid where registered_[block]
  std::vector<bool> registered_;
  std::vector<int32_t> free_blocks_;  // a stack: recently freed blocks are reused first (warm pages)
  std::unordered_map<uint64_t, int32_t> prefix_index_;

  // Cached blocks as an intrusive doubly linked list, least recently released at the head.
  std::vector<int32_t> lru_previous_;
  std::vector<int32_t> lru_next_;
  int32_t lru_head_ = kNone;
  int32_t lru_tail_ = kNone;
  int64_t num_cached_ = 0;

  int64_t num_queried_blocks_ = 0;
  int64_t num_hit_blocks_ = 0;
  int64_t num_evicted_blocks_ = 0;
  PrefixIndexJournal* journal_ = nullptr;
};

}  // namespace recgpt
