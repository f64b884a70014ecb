// Histogram buckets the processes share for token timing, so that the router's time per output token and a
// decode node's inter-token latency compare bucket by bucket (docs/metrics.md).
#pragma once

#include <vector>

namespace recgpt::admin {

// Between tokens: from a millisecond step on a GPU node to a loaded CPU node's second.
inline std::vector<double> token_gap_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5};
}

}  // namespace recgpt::admin
