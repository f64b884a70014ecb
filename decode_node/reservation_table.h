// KV block reservations of a decode node: admission control before any prefill compute is spent
// (../shared/DESIGN.md §2 step 3). A reservation holds the blocks for a whole prompt plus its decode budget;
// blocks the node already holds for the prompt's prefix (its prefix index) are reused and reported as cached.
// A reservation ends in exactly one of three ways: taken (its blocks move to a running sequence), cancelled,
// or expired at its deadline; the last two return every block. Nothing leaks: `reserved_blocks()` is the sum
// of what the live reservations hold.
//
// Holds block ids only; the BlockManager (the engine's) holds the references. Not thread-safe: owned by the
// decode node's engine thread, like the BlockManager.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "engine/block_manager.h"

namespace recgpt::decode {

using Clock = std::chrono::steady_clock;

struct ReservationRequest {
  int64_t prompt_tokens = 0;
  int64_t max_new_tokens = 0;
  std::span<const uint64_t> block_hashes;  // chain hashes of the prompt's full blocks, in order
  Clock::time_point expires;
};

struct Reservation {
  uint64_t id = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;    // leading prompt tokens whose KV this node holds already
  std::vector<int32_t> blocks;  // the sequence's whole block table: cached blocks first, then new ones
  Clock::time_point expires;

  // The blocks the prefill node fills: from the first uncached token on.
  std::span<const int32_t> blocks_to_fill(int block_size) const {
    return std::span<const int32_t>(blocks).subspan(static_cast<size_t>(cached_tokens / block_size));
  }
  // Of those, the ones holding prompt tokens: what a prefill node writes.
  std::span<const int32_t> prompt_blocks_to_fill(int block_size) const {
    const auto prompt_blocks = static_cast<size_t>((prompt_tokens + block_size - 1) / block_size);
    return blocks_to_fill(block_size).first(prompt_blocks - static_cast<size_t>(cached_tokens / block_size));
  }
};

class ReservationTable {
 public:
  ReservationTable(BlockManager& blocks, int block_size);
  ~ReservationTable();  // returns the blocks of every live reservation
  ReservationTable(const ReservationTable&) = delete;
  ReservationTable& operator=(const ReservationTable&) = delete;

  // Reserves ceil((prompt_tokens + max_new_tokens) / block_size) blocks, reusing the longest cached prefix. At
  // least the prompt's last token is left uncached (its logits give the first token, and its block must be
  // writable). kResourceExhausted ("no room", with needed and available counts) changes nothing;
  // kInvalidArgument for counts out of range or more hashes than full prompt blocks.
  Result<Reservation> reserve(const ReservationRequest& request);

  // Moves a live reservation out (the caller now owns its block references). kNotFound when unknown,
  // cancelled or expired.
  Result<Reservation> take(uint64_t id);
  // Returns a live reservation's blocks. kNotFound when unknown, taken or expired.
  Status cancel(uint64_t id);
  // Returns the blocks of every reservation whose deadline is at or before `now`; their ids. `expiring`, when
  // set, sees each such reservation before its blocks go.
  std::vector<uint64_t> expire(Clock::time_point now,
                               const std::function<void(const Reservation&)>& expiring = nullptr);
  // The live reservation `id`, or null.
  const Reservation* find(uint64_t id) const;

  size_t size() const { return live_.size(); }
  int64_t reserved_blocks() const { return reserved_blocks_; }
  // The earliest deadline among live reservations (to arm a timer), or max() when none.
  Clock::time_point next_expiry() const;

 private:
  void release(Reservation& reservation);

  BlockManager& blocks_;
  const int block_size_;
  uint64_t next_id_ = 1;
  int64_t reserved_blocks_ = 0;
  std::unordered_map<uint64_t, Reservation> live_;
};

}  // namespace recgpt::decode
