#include "decode_node/write_fences.h"

#include <algorithm>

#include "common/status.h"

namespace recgpt::decode {

WriteFences::~WriteFences() {
  for (auto& [id, fence] : fences_) drop(fence);
}

void WriteFences::hold(uint64_t id, std::span<const int32_t> blocks, Clock::time_point lapses) {
  RECGPT_CHECK(fences_.count(id) == 0);
  for (int32_t block : blocks) blocks_.add_ref(block);
  held_blocks_ += static_cast<int64_t>(blocks.size());
  fences_[id] = {std::vector<int32_t>(blocks.begin(), blocks.end()), lapses};
}

bool WriteFences::release(uint64_t id) {
  auto it = fences_.find(id);
  if (it == fences_.end()) return false;
  drop(it->second);
  fences_.erase(it);
  return true;
}

int64_t WriteFences::release_lapsed(Clock::time_point now) {
  int64_t lapsed = 0;
  for (auto it = fences_.begin(); it != fences_.end();) {
    if (it->second.lapses > now) {
      ++it;
      continue;
    }
    drop(it->second);
    it = fences_.erase(it);
    ++lapsed;
  }
  return lapsed;
}

Clock::time_point WriteFences::next_lapse() const {
  Clock::time_point earliest = Clock::time_point::max();
  for (const auto& [id, fence] : fences_) earliest = std::min(earliest, fence.lapses);
  return earliest;
}

void WriteFences::drop(Fence& fence) {
  blocks_.release(fence.blocks);
  held_blocks_ -= static_cast<int64_t>(fence.blocks.size());
  fence.blocks.clear();
}

}  // namespace recgpt::decode
