// What a KV pool's prefix index gained and lost, for the node's LoadReport: a router keeps an approximate copy
// of every node's index from these (as SGLang's cache-aware router and Dynamo's KV router do with KV events) and
// scores placements by cached prefix blocks.
//
// Threading: the engine thread records (through BlockManager), the network thread takes; every method locks.
#pragma once

#include <cstdint>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace recgpt {

class PrefixIndexJournal {
 public:
  struct Changes {
    std::vector<uint64_t> added;    // block hashes indexed since the last take()
    std::vector<uint64_t> evicted;  // block hashes dropped from the index since the last take()
  };

  void record_added(uint64_t hash);
  void record_evicted(uint64_t hash);

  // The net changes since the previous take(): a hash added then evicted in between (or the reverse) is in
  // neither list. Bounded by twice the pool's blocks, however long between takes.
  Changes take();

  // Every hash in the index now (order unspecified): what a peer that just connected starts from.
  std::vector<uint64_t> snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::unordered_set<uint64_t> indexed_;
  std::unordered_set<uint64_t> added_;
  std::unordered_set<uint64_t> evicted_;
};

}  // namespace recgpt
