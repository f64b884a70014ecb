// What one node of a pool can do, as the capacity planner's performance model sees it: its memory, its peak
// memory bandwidth and dense FLOP rate, the fraction of each a serving step reaches, a fixed cost per step, and
// the link its KV pushes cross. Built-in profiles carry datasheet peaks and efficiencies from published serving
// kernels (../shared/BASELINES.md, docs/capacity.md); a JSON file with the same fields describes any other
// machine, e.g. one calibrated with `recgpt bench engine --json` on it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace recgpt::capacity {

struct HardwareProfile {
  std::string name;
  double memory_bytes = 0;                // what weights, KV cache and activations share
  double memory_reserved_fraction = 0.1;  // activations, workspaces, fragmentation: not KV, not weights
  double memory_bandwidth = 0;            // bytes/s, peak
  double bandwidth_efficiency = 0.75;     // fraction of memory_bandwidth a decode step reaches
  double peak_flops = 0;                  // dense FLOP/s in the weights' precision
  double flops_efficiency = 0.6;          // fraction of peak_flops a prefill step reaches
  double step_overhead_seconds = 0;       // per forward: launches, scheduling, sampling
  // How much equal steps vary: each step's time is scaled by a log-normal factor of mean 1 and this sigma (0: every
  // step takes exactly the model's time). Host jitter, clocks, other tenants; p90/p50 of equal steps is
  // exp(1.2816 sigma).
  double step_time_sigma = 0;
  double kv_link_bandwidth = 0;        // bytes/s one node's KV pushes move at
  double kv_link_latency_seconds = 0;  // per push
  double cost_per_hour = 0;            // optional: price of one node, for the plan's cost line
};

// "h100", "h200" (SXM parts, one GPU per node, a 400 Gb/s NIC per GPU).
std::vector<std::string> builtin_hardware_names();
// A built-in name, or a JSON file of a HardwareProfile's fields (unknown fields are errors: a typo must not
// fall back to a default). kInvalidArgument naming the field for a missing, mistyped or out-of-range value;
// kNotFound for a name that is neither.
Result<HardwareProfile> load_hardware(const std::string& name_or_path);
Result<HardwareProfile> parse_hardware(std::string_view json_text, const std::string& source);

}  // namespace recgpt::capacity
