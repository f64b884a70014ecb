#include "engine/prefix_index_journal.h"

namespace recgpt {

void PrefixIndexJournal::record_added(uint64_t hash) {
  std::lock_guard lock(mutex_);
  indexed_.insert(hash);
  if (evicted_.erase(hash) == 0) added_.insert(hash);
}

void PrefixIndexJournal::record_evicted(uint64_t hash) {
  std::lock_guard lock(mutex_);
  indexed_.erase(hash);
  if (added_.erase(hash) == 0) evicted_.insert(hash);
}

PrefixIndexJournal::Changes PrefixIndexJournal::take() {
  std::lock_guard lock(mutex_);
  Changes changes{{added_.begin(), added_.end()}, {evicted_.begin(), evicted_.end()}};
  added_.clear();
  evicted_.clear();
  return changes;
}

std::vector<uint64_t> PrefixIndexJournal::snapshot() const {
  std::lock_guard lock(mutex_);
  return {indexed_.begin(), indexed_.end()};
}

}  // namespace recgpt
