// `recgpt bench serve`: the whole serving path under an open-loop load, as users meet it: requests arrive as a
// Poisson process at `rate` per second for `duration` seconds, each a streaming completion over HTTP to the
// router (prompt given as token ids, `ignore_eos` so every call generates output_len tokens). Reported per mode:
// TTFT, inter-token latency (gaps between text events), time per output token and end-to-end percentiles,
// throughput, and goodput (requests per second that met both SLOs, as DistServe defines it).
//
// Modes: the benchmark starts the cluster itself — `disaggregated` (a prefill and a decode process joined by ucx)
// and `colocated` (`recgpt serve`), each behind a `recgpt router` process — or measures an existing router
// (`--url`). For the clusters it starts, it also measures the router's own added latency: the same call run one
// at a time directly against the node pair (the control protocol, as the router speaks it) and through the
// router's HTTP API, in alternating order; the median of the paired differences is what the router adds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/latency.h"
#include "common/status.h"

namespace recgpt {

struct ServeBenchOptions {
  std::string model_dir;              // for the vocabulary, and the model the started clusters serve
  std::string self_path;              // this binary, to start the clusters
  std::string url;                    // an existing router (http://host:port); empty: start the clusters
  std::string api_key;                // for --url
  std::string model_name = "recgpt";  // what requests name
  std::vector<std::string> modes = {"disaggregated", "colocated"};
  double rate = 4;            // requests per second (Poisson arrivals)
  double duration = 20;       // seconds of arrivals
  int prompt_len = 256;       // tokens
  int shared_prefix_len = 0;  // leading prompt tokens every request shares (a workflow's user context)
  int output_len = 32;        // tokens each request generates
  double slo_ttft_ms = 1000;
  double slo_tpot_ms = 100;
  int overhead_calls = 100;  // sequential call pairs for the router's added latency (0: skip)
  std::string tls = "tcp";
  int kv_cache_mib = 256;
  int threads = 1;  // compute threads per node process
  uint64_t seed = 1;
};

struct RouterOverhead {
  int calls = 0;
  double direct_e2e_p50 = 0;            // seconds, the call straight to the node pair
  double router_e2e_p50 = 0;            // seconds, the same call through the router's HTTP API
  bench::LatencyPercentiles added_e2e;  // router minus direct, per pair
  bench::LatencyPercentiles added_ttft;
};

struct ServeBenchFigure {
  std::string mode;
  int requests = 0;
  int failed = 0;
  double seconds = 0;  // first arrival to last completion
  bench::LatencyPercentiles ttft, itl, tpot, e2e;
  double request_throughput = 0;  // completed requests per second
  double output_tokens_per_second = 0;
  double goodput = 0;  // requests per second within both SLOs
  std::string first_error;
  RouterOverhead overhead;  // calls == 0 when not measured
};

struct ServeBenchReport {
  ServeBenchOptions options;
  std::vector<ServeBenchFigure> figures;
};

Result<ServeBenchReport> run_serve_bench(const ServeBenchOptions& options);
std::string serve_bench_report_text(const ServeBenchReport& report);
std::string serve_bench_report_json(const ServeBenchReport& report);

}  // namespace recgpt
