// Latency percentiles of a benchmark's samples (nearest rank).
#pragma once

#include <vector>

namespace recgpt::bench {

struct LatencyPercentiles {
  double p50 = 0, p90 = 0, p99 = 0;  // seconds
};
LatencyPercentiles percentiles(std::vector<double> values);

}  // namespace recgpt::bench
