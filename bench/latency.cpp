#include "bench/latency.h"

#include <algorithm>

namespace recgpt::bench {

LatencyPercentiles percentiles(std::vector<double> values) {
  LatencyPercentiles result;
  if (values.empty()) return result;
  std::sort(values.begin(), values.end());
  auto at = [&](double q) { return values[std::min(values.size() - 1, static_cast<size_t>(q * values.size()))]; };
  result.p50 = at(0.50);
  result.p90 = at(0.90);
  result.p99 = at(0.99);
  return result;
}

}  // namespace recgpt::bench
