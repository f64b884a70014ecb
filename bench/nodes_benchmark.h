// `recgpt bench nodes`: the two serving tiers under load on this machine, disaggregated (a prefill process and
// a decode process joined by ucx) against colocated (`recgpt serve`: both in one process, in-process KV), on the
// same model and the same calls. Many calls run at once; each is reserve -> prefill -> decode stream, as the
// router will run it. Reported per mode: time to first token and inter-token latency percentiles, and
// generated tokens per second; then disaggregated / colocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/latency.h"
#include "common/status.h"

namespace recgpt {

struct NodesBenchOptions {
  std::string model_dir;
  std::string self_path;  // this binary, to start the nodes
  std::string tls = "tcp";
  int concurrency = 8;      // calls in flight at once
  int calls = 32;           // per mode
  int prompt_tokens = 256;  // per call: a shared user context ...
  int shared_tokens = 192;  // ... of this many tokens, then a tail of the call's own
  int max_new_tokens = 32;
  int kv_cache_mib = 256;  // each node's pool
  int threads = 1;         // compute threads per node (two nodes share this machine's cores)
};

struct NodesBenchFigure {
  std::string mode;  // "disaggregated" or "colocated"
  bench::LatencyPercentiles time_to_first_token;
  bench::LatencyPercentiles inter_token_latency;
  double generated_tokens_per_second = 0;
  int64_t generated_tokens = 0;
  double seconds = 0;
};

struct NodesBenchReport {
  NodesBenchOptions options;
  std::vector<NodesBenchFigure> figures;
};

Result<NodesBenchReport> run_nodes_bench(const NodesBenchOptions& options);
std::string nodes_bench_report_text(const NodesBenchReport& report);
std::string nodes_bench_report_json(const NodesBenchReport& report);

}  // namespace recgpt
