#include "capacity/sim_kv_pool.h"

namespace recgpt::capacity {

int64_t LruHashSet::held_prefix(std::span<const uint64_t> hashes) const {
  int64_t count = 0;
  for (uint64_t hash : hashes) {
    if (held_.count(hash) == 0) break;
    ++count;
  }
  return count;
}

void LruHashSet::touch(std::span<const uint64_t> hashes) {
  for (uint64_t hash : hashes) {
    auto it = where_.find(hash);
    if (it != where_.end()) {
      order_.splice(order_.end(), order_, it->second);
      continue;
    }
    order_.push_back(hash);
    where_[hash] = std::prev(order_.end());
    held_.insert(hash);
  }
  while (static_cast<int64_t>(order_.size()) > capacity_) {
    where_.erase(order_.front());
    held_.erase(order_.front());
    order_.pop_front();
  }
}

int64_t SimKvPool::held_prefix(std::span<const uint64_t> hashes) const {
  int64_t count = 0;
  for (uint64_t hash : hashes) {
    if (held_.count(hash) == 0) break;
    ++count;
  }
  return count;
}

bool SimKvPool::reserve(std::span<const uint64_t> hashes, int64_t total_blocks, Reservation& out) {
  // A hashed block another sequence references costs no room; a cached one takes its block out of the
  // evictable room; anything else needs a free block.
  int64_t needed = total_blocks - static_cast<int64_t>(hashes.size());
  for (uint64_t hash : hashes) needed += references_.count(hash) ? 0 : 1;
  if (needed > blocks_ - used_blocks()) return false;
  out.held_blocks = held_prefix(hashes);
  for (uint64_t hash : hashes) {
    uncache(hash);
    ++references_[hash];
    held_.insert(hash);
  }
  out.private_blocks = total_blocks - static_cast<int64_t>(hashes.size());
  private_blocks_ += out.private_blocks;
  evict_to_fit();
  return true;
}

void SimKvPool::release(std::span<const uint64_t> hashes, const Reservation& reservation) {
  private_blocks_ -= reservation.private_blocks;
  for (uint64_t hash : hashes) {
    auto it = references_.find(hash);
    if (it == references_.end() || --it->second > 0) continue;
    references_.erase(it);
    cached_order_.push_back(hash);
    cached_[hash] = std::prev(cached_order_.end());
  }
  evict_to_fit();
}

void SimKvPool::uncache(uint64_t hash) {
  auto it = cached_.find(hash);
  if (it == cached_.end()) return;
  cached_order_.erase(it->second);
  cached_.erase(it);
}

void SimKvPool::evict_to_fit() {
  while (used_blocks() + cached_blocks() > blocks_ && !cached_order_.empty()) {
    held_.erase(cached_order_.front());
    cached_.erase(cached_order_.front());
    cached_order_.pop_front();
  }
}

}  // namespace recgpt::capacity
