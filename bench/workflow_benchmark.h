// `recgpt bench workflows`: the `intent` workflow under an open-loop load, as its users run it: synthetic users
// (a history of `history_len` items, a share of them known to the entity store) arrive as a Poisson process at
// `rate` per second for `duration` seconds, each one workflow over HTTP against a local cluster (`recgpt up`,
// started fresh per mode so caches start cold). Modes: `hybrid` (shared hybrid context, workflow affinity),
// `no_affinity` (shared context, each call placed on its own), `v1` (the V1-style baseline: isolated agents,
// whole text context each). Reported per mode: end-to-end and per-stage percentiles, workflows per second,
// goodput (workflows within the SLO), prompt tokens computed per workflow and the context's compression.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "bench/latency.h"
#include "common/status.h"

namespace recgpt {

struct WorkflowBenchOptions {
  std::string model_dir;
  std::string self_path;
  std::vector<std::string> modes = {"hybrid", "no_affinity", "v1"};
  double rate = 1;
  double duration = 20;
  int history_len = 40;
  double known_fraction = 0.8;  // of history items the entity store knows
  int experts = 3;
  double slo_ms = 2000;  // end to end
  int prefill = 1;
  int decode = 1;
  int kv_cache_mib = 256;
  uint64_t seed = 1;
};

struct WorkflowBenchFigure {
  std::string mode;
  int workflows = 0;
  int failed = 0;
  double seconds = 0;
  bench::LatencyPercentiles e2e;
  std::map<std::string, bench::LatencyPercentiles> stages;
  double workflows_per_second = 0;
  double goodput = 0;
  double computed_prompt_tokens = 0;  // mean per workflow
  double prompt_tokens = 0;           // mean per workflow
  double compression_ratio = 0;       // mean
  std::string first_error;
};

struct WorkflowBenchReport {
  WorkflowBenchOptions options;
  std::vector<WorkflowBenchFigure> figures;
};

Result<WorkflowBenchReport> run_workflow_bench(const WorkflowBenchOptions& options);
std::string workflow_bench_report_text(const WorkflowBenchReport& report);
std::string workflow_bench_report_json(const WorkflowBenchReport& report);

}  // namespace recgpt
