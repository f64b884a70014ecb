#include "engine/block_manager.h"

#include <limits>
#include <string>

#include "engine/prefix_index_journal.h"

namespace recgpt {

BlockManager::BlockManager(int64_t num_blocks) {
  RECGPT_CHECK(num_blocks >= 0 && num_blocks <= std::numeric_limits<int32_t>::max());
  size_t size = static_cast<size_t>(num_blocks);
  ref_counts_.assign(size, 0);
  block_hashes_.assign(size, 0);
  registered_.assign(size, false);
  lru_previous_.assign(size, kNone);
  lru_next_.assign(size, kNone);
  free_blocks_.reserve(size);
  // Highest id at the bottom of the stack, so a fresh manager hands out 0, 1, 2, ...
  for (int64_t block = num_blocks - 1; block >= 0; --block) free_blocks_.push_back(static_cast<int32_t>(block));
}

void BlockManager::check_block(int32_t block) const {
  RECGPT_CHECK_MSG(block >= 0 && block < num_blocks(), "block id " + std::to_string(block) + " outside the pool");
}

Result<std::vector<int32_t>> BlockManager::allocate(int64_t count) {
  if (count < 0) return invalid_argument("cannot allocate a negative number of KV blocks: " + std::to_string(count));
  if (count > num_available_blocks()) {
    return resource_exhausted("requested " + std::to_string(count) + " KV blocks, " +
                              std::to_string(num_available_blocks()) + " available (" +
                              std::to_string(num_free_blocks()) + " free, " + std::to_string(num_cached_blocks()) +
                              " cached) of " + std::to_string(num_blocks()));
  }
  std::vector<int32_t> blocks;
  blocks.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    int32_t block = take_block();
    ref_counts_[block] = 1;
    blocks.push_back(block);
  }
  return blocks;
}

int32_t BlockManager::take_block() {
  if (!free_blocks_.empty()) {
    int32_t block = free_blocks_.back();
    free_blocks_.pop_back();
    return block;
  }
  int32_t block = lru_head_;
  RECGPT_CHECK(block != kNone);
  lru_remove(block);
  prefix_index_.erase(block_hashes_[block]);
  if (journal_ != nullptr) journal_->record_evicted(block_hashes_[block]);
  registered_[block] = false;
  ++num_evicted_blocks_;
  return block;
}

void BlockManager::add_ref(int32_t block) {
  check_block(block);
  RECGPT_CHECK_MSG(ref_counts_[block] > 0, "add_ref of unused block " + std::to_string(block));
  ++ref_counts_[block];
}

void BlockManager::release(int32_t block) {
  check_block(block);
  RECGPT_CHECK_MSG(ref_counts_[block] > 0, "release of unused block " + std::to_string(block));
  if (--ref_counts_[block] > 0) return;
  if (registered_[block]) {
    lru_push_back(block);
  } else {
    free_blocks_.push_back(block);
  }
}

void BlockManager::release(std::span<const int32_t> blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) release(*it);
}

PrefixMatch BlockManager::match_prefix(std::span<const uint64_t> block_hashes) {
  PrefixMatch match;
  num_queried_blocks_ += static_cast<int64_t>(block_hashes.size());
  for (uint64_t hash : block_hashes) {
    auto found = prefix_index_.find(hash);
    if (found == prefix_index_.end()) break;
    int32_t block = found->second;
    if (ref_counts_[block] == 0) lru_remove(block);
    ++ref_counts_[block];
    match.blocks.push_back(block);
  }
  num_hit_blocks_ += match.num_blocks();
  return match;
}

bool BlockManager::register_block(uint64_t hash, int32_t block) {
  check_block(block);
  RECGPT_CHECK_MSG(ref_counts_[block] > 0, "register_block of unused block " + std::to_string(block));
  if (registered_[block]) {
    RECGPT_CHECK_MSG(block_hashes_[block] == hash, "block " + std::to_string(block) + " registered twice");
    return true;
  }
  if (!prefix_index_.emplace(hash, block).second) return false;
  if (journal_ != nullptr) journal_->record_added(hash);
  registered_[block] = true;
  block_hashes_[block] = hash;
  return true;
}

int32_t BlockManager::ref_count(int32_t block) const {
  check_block(block);
  return ref_counts_[block];
}

uint64_t BlockManager::registered_hash(int32_t block) const {
  RECGPT_CHECK_MSG(is_registered(block), "block " + std::to_string(block) + " is not registered");
  return block_hashes_[block];
}

bool BlockManager::is_registered(int32_t block) const {
  check_block(block);
  return registered_[block];
}

void BlockManager::lru_push_back(int32_t block) {
  lru_previous_[block] = lru_tail_;
  lru_next_[block] = kNone;
  if (lru_tail_ != kNone) {
    lru_next_[lru_tail_] = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
  ++num_cached_;
}

void BlockManager::lru_remove(int32_t block) {
  int32_t previous = lru_previous_[block];
  int32_t next = lru_next_[block];
  if (previous != kNone) {
    lru_next_[previous] = next;
  } else {
    lru_head_ = next;
  }
  if (next != kNone) {
    lru_previous_[next] = previous;
  } else {
    lru_tail_ = previous;
  }
  lru_previous_[block] = kNone;
  lru_next_[block] = kNone;
  --num_cached_;
}

Status BlockManager::check_invariants() const {
  const size_t size = ref_counts_.size();
  // 0 = not seen, 1 = free, 2 = cached; a block seen twice is a violation.
  std::vector<uint8_t> seen(size, 0);
  for (int32_t block : free_blocks_) {
    if (block < 0 || static_cast<size_t>(block) >= size) return internal_error("free list holds an invalid id");
    if (seen[block] != 0) return internal_error("block " + std::to_string(block) + " twice in the free list");
    if (ref_counts_[block] != 0 || registered_[block]) {
      return internal_error("free block " + std::to_string(block) + " is used or registered");
    }
    seen[block] = 1;
  }
  int64_t cached = 0;
  int32_t previous = kNone;
  for (int32_t block = lru_head_; block != kNone; previous = block, block = lru_next_[block]) {
    if (block < 0 || static_cast<size_t>(block) >= size || seen[block] != 0 || cached > num_cached_) {
      return internal_error("LRU list is corrupt at block " + std::to_string(block));
    }
    if (lru_previous_[block] != previous) return internal_error("LRU back link broken at " + std::to_string(block));
    if (ref_counts_[block] != 0 || !registered_[block]) {
      return internal_error("cached block " + std::to_string(block) + " is used or unregistered");
    }
    seen[block] = 2;
    ++cached;
  }
  if (previous != lru_tail_ || cached != num_cached_) return internal_error("LRU tail or count is wrong");
  size_t num_registered = 0;
  for (size_t block = 0; block < size; ++block) {
    if (ref_counts_[block] < 0) return internal_error("negative ref count at block " + std::to_string(block));
    if (seen[block] == 0 && ref_counts_[block] == 0) {
      return internal_error("block " + std::to_string(block) + " is neither free, cached nor used");
    }
    if (!registered_[block]) continue;
    ++num_registered;
    auto found = prefix_index_.find(block_hashes_[block]);
    if (found == prefix_index_.end() || found->second != static_cast<int32_t>(block)) {
      return internal_error("registered block " + std::to_string(block) + " missing from the prefix index");
    }
  }
  if (num_registered != prefix_index_.size()) return internal_error("prefix index holds unregistered blocks");
  return Status::ok();
}

}  // namespace recgpt
