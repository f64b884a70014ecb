#include "engine/token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "common/status.h"
#include "engine/cpu/ops.h"

namespace recgpt {
namespace {

// The row is summed in blocks: exp of a block into a small buffer by one vector pass (engine/cpu/ops.h).
constexpr size_t kBlock = 2048;

constexpr auto more_likely = [](const TokenLogprob& a, const TokenLogprob& b) {
  return a.logprob > b.logprob || (a.logprob == b.logprob && a.token < b.token);
};

}  // namespace

void LogprobRecorder::record(std::span<const float> raw_logits) {
  RECGPT_CHECK_MSG(!raw_logits.empty(), "a logit row must not be empty");
  raw_.assign(raw_logits.begin(), raw_logits.end());
  const float max_logit = max_value(raw_.data(), static_cast<int64_t>(raw_.size()));
  if (!std::isfinite(max_logit)) {  // nothing finite: every token equally (un)likely, or NaN throughout
    log_total_ = max_logit;
    return;
  }
  float buffer[kBlock];
  double total = 0;
  for (size_t begin = 0; begin < raw_.size(); begin += kBlock) {
    total += exp_shifted(raw_.data() + begin, static_cast<int64_t>(std::min(kBlock, raw_.size() - begin)), max_logit,
                         buffer);
  }
  log_total_ = static_cast<double>(max_logit) + std::log(total);
}

TokenLogprobs LogprobRecorder::read(int32_t token, int top) const {
  RECGPT_CHECK_MSG(token >= 0 && static_cast<size_t>(token) < raw_.size(),
                   "token " + std::to_string(token) + " outside the recorded row");
  RECGPT_CHECK(top >= 0);
  auto logprob = [this](size_t i) { return static_cast<float>(static_cast<double>(raw_[i]) - log_total_); };
  TokenLogprobs result;
  result.logprob = logprob(static_cast<size_t>(token));
  const size_t wanted = std::min(static_cast<size_t>(top), raw_.size());
  if (wanted == 0) return result;
  // The `wanted` largest logits as a heap whose front is the least likely kept. Once it is full, a block whose
  // maximum (one vector pass) is below that front is skipped whole, and within a block a token below it costs
  // one comparison.
  std::vector<TokenLogprob>& heap = result.top;
  heap.reserve(wanted);
  float floor = -std::numeric_limits<float>::infinity();
  for (size_t begin = 0; begin < raw_.size(); begin += kBlock) {
    const size_t end = std::min(raw_.size(), begin + kBlock);
    if (heap.size() == wanted && max_value(raw_.data() + begin, static_cast<int64_t>(end - begin)) < floor) continue;
    for (size_t i = begin; i < end; ++i) {
      if (raw_[i] < floor) continue;
      const TokenLogprob candidate{static_cast<int32_t>(i), raw_[i]};
      if (heap.size() < wanted) {
        heap.push_back(candidate);
        std::push_heap(heap.begin(), heap.end(), more_likely);
      } else if (more_likely(candidate, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), more_likely);
        heap.back() = candidate;
        std::push_heap(heap.begin(), heap.end(), more_likely);
      } else {
        continue;
      }
      if (heap.size() == wanted) floor = heap.front().logprob;
    }
  }
  std::sort_heap(heap.begin(), heap.end(), more_likely);
  for (TokenLogprob& entry : heap) entry.logprob = logprob(static_cast<size_t>(entry.token));
  return result;
}

}  // namespace recgpt
