#include "decode_node/reservation_table.h"

#include <algorithm>
#include <string>

namespace recgpt::decode {

ReservationTable::ReservationTable(BlockManager& blocks, int block_size) : blocks_(blocks), block_size_(block_size) {
  RECGPT_CHECK(block_size > 0);
}

ReservationTable::~ReservationTable() {
  for (auto& [id, reservation] : live_) release(reservation);
}

Result<Reservation> ReservationTable::reserve(const ReservationRequest& request) {
  if (request.prompt_tokens < 1 || request.max_new_tokens < 0) {
    return invalid_argument("a reservation needs a prompt of at least 1 token and a decode budget >= 0, got " +
                            std::to_string(request.prompt_tokens) + " and " + std::to_string(request.max_new_tokens));
  }
  const int64_t total_tokens = request.prompt_tokens + request.max_new_tokens;
  if (total_tokens / block_size_ > blocks_.num_blocks()) {
    return resource_exhausted("no room: " + std::to_string(total_tokens) + " tokens exceed the whole KV pool");
  }
  const int64_t full_prompt_blocks = request.prompt_tokens / block_size_;
  if (static_cast<int64_t>(request.block_hashes.size()) > full_prompt_blocks) {
    return invalid_argument("a reservation names " + std::to_string(request.block_hashes.size()) +
                            " block hashes for a prompt of " + std::to_string(full_prompt_blocks) + " full blocks");
  }
  const int64_t needed_blocks = (total_tokens + block_size_ - 1) / block_size_;

  PrefixMatch match = blocks_.match_prefix(request.block_hashes);
  // The prompt's last token is always computed again: keep only blocks that end before it.
  const int64_t usable = std::min(match.num_blocks(), (request.prompt_tokens - 1) / block_size_);
  blocks_.release(std::span<const int32_t>(match.blocks).subspan(static_cast<size_t>(usable)));
  match.blocks.resize(static_cast<size_t>(usable));

  Result<std::vector<int32_t>> fresh = blocks_.allocate(needed_blocks - usable);
  if (!fresh.is_ok()) {
    const int64_t available = blocks_.num_available_blocks();
    blocks_.release(match.blocks);
    return resource_exhausted("no room: the reservation needs " + std::to_string(needed_blocks - usable) +
                              " new blocks, " + std::to_string(available) + " are available");
  }
  Reservation reservation;
  reservation.id = next_id_++;
  reservation.prompt_tokens = request.prompt_tokens;
  reservation.cached_tokens = usable * block_size_;
  reservation.blocks = std::move(match.blocks);
  reservation.blocks.insert(reservation.blocks.end(), fresh->begin(), fresh->end());
  reservation.expires = request.expires;
  reserved_blocks_ += static_cast<int64_t>(reservation.blocks.size());
  live_.emplace(reservation.id, reservation);
  return reservation;
}

Result<Reservation> ReservationTable::take(uint64_t id) {
  auto it = live_.find(id);
  if (it == live_.end())
    return not_found("reservation " + std::to_string(id) + " is not live (taken, cancelled or expired)");
  Reservation reservation = std::move(it->second);
  live_.erase(it);
  reserved_blocks_ -= static_cast<int64_t>(reservation.blocks.size());
  return reservation;
}

Status ReservationTable::cancel(uint64_t id) {
  auto it = live_.find(id);
  if (it == live_.end())
    return not_found("reservation " + std::to_string(id) + " is not live (taken, cancelled or expired)");
  release(it->second);
  live_.erase(it);
  return Status::ok();
}

std::vector<uint64_t> ReservationTable::expire(Clock::time_point now,
                                               const std::function<void(const Reservation&)>& expiring) {
  std::vector<uint64_t> expired;
  for (auto it = live_.begin(); it != live_.end();) {
    if (it->second.expires > now) {
      ++it;
      continue;
    }
    if (expiring) expiring(it->second);
    expired.push_back(it->first);
    release(it->second);
    it = live_.erase(it);
  }
  std::sort(expired.begin(), expired.end());
  return expired;
}

const Reservation* ReservationTable::find(uint64_t id) const {
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : &it->second;
}

Clock::time_point ReservationTable::next_expiry() const {
  Clock::time_point earliest = Clock::time_point::max();
  for (const auto& [id, reservation] : live_) earliest = std::min(earliest, reservation.expires);
  return earliest;
}

void ReservationTable::release(Reservation& reservation) {
  blocks_.release(reservation.blocks);
  reserved_blocks_ -= static_cast<int64_t>(reservation.blocks.size());
  reservation.blocks.clear();
}

}  // namespace recgpt::decode
