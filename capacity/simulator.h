// A discrete-event simulation of the serving cluster under a workflow load, for the capacity planner.
//
// Workflows arrive as a Poisson process; each runs its stages in order (a stage's calls concurrently, the next
// stage once all of them ended), every call's prompt being [system text][the user's context][its own suffix].
// The router places each call with the real placement code (router/placement_policy.h) on a snapshot of the
// simulated nodes, with workflow affinity when the workload shares prefixes, and waits when no decode node has
// room. Nodes step as the serving
// nodes do: a prefill node computes its queue's prompts in steps of at most `max_step_tokens` (chunked, FCFS),
// skipping the prefix it holds, then pushes the KV the decode node lacks over its link, overlapped with the
// compute layer by layer; a decode node runs every ready sequence one token per step (continuous batching); a
// colocated node does both in one step, prompt chunks next to the decode tokens. Step times come from the
// performance model (capacity/perf_model.h). The router sees exact loads (no report delay) and nothing fails.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "capacity/perf_model.h"
#include "capacity/workload.h"
#include "router/placement_policy.h"

namespace recgpt::capacity {

struct Pools {
  bool colocated = false;  // true: `decode_nodes` colocated nodes and no prefill pool
  int prefill_nodes = 0;
  int decode_nodes = 0;
};

struct SimulationOptions {
  double workflows_per_second = 1;
  double duration_seconds = 300;  // arrivals; the run then drains
  double warmup_fraction = 0.1;   // workflows arriving before this share of the duration are not measured
  uint64_t seed = 1;
  int64_t max_step_tokens = 8192;  // prompt tokens + decode tokens in one step
  int max_batch = 256;             // sequences one decode step runs
  router::PolicyOptions policy;
  // The serving path around the nodes' steps, per call: the router's HTTP handling, tokenization, placement and
  // the control-plane round trips, between a call's stage starting and its prompt joining a node's queue. Counts
  // in its TTFT and its workflow's latency.
  double call_overhead_seconds = 0;
  // A run whose simulated clock passes duration * this factor is overloaded: it stops and says so.
  double overload_factor = 10;
  // When set (> 0), the run also stops, as `late`, once more than `late_share` of the calls it expects to measure
  // waited longer than this for their first token: their TTFT p99 is above it whatever the rest would do. The
  // planner sets it to the TTFT objective, so a hopeless candidate costs little.
  double late_ttft_seconds = 0;
  double late_share = 0.02;
};

struct LatencySummary {
  int64_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
};

struct SimulationResult {
  bool overloaded = false;  // the queues grew without bound: latencies are not meaningful
  bool late = false;        // stopped early: too many calls waited past late_ttft_seconds
  int64_t workflows = 0;    // measured (arrived after the warm-up, finished)
  LatencySummary ttft;      // per call: placed -> first token
  LatencySummary itl;       // per token after a call's first
  LatencySummary workflow_latency;
  std::map<std::string, LatencySummary> ttft_by_stage;
  double prefill_utilization = 0;  // share of the run spent stepping, averaged over the prefill (or colocated) pool
  double decode_utilization = 0;
  double peak_kv_used_fraction = 0;        // highest share of a decode (or colocated) node's pool in use
  double prefill_tokens_per_workflow = 0;  // prompt tokens computed
  double prompt_tokens_per_workflow = 0;   // prompt tokens the calls carried
  double kv_bytes_per_workflow = 0;        // pushed from prefill to decode nodes
  int64_t calls_waited_for_room = 0;       // found no decode node with room at first
  int64_t blocks_left_reserved = 0;        // after the drain: 0 unless the simulator leaks
  double simulated_seconds = 0;
};

// `prefill_model` prices the prefill pool's steps, `decode_model` the decode (or colocated) pool's.
// kInvalidArgument for an empty pool, a non-positive rate or duration, or a call that cannot fit one node's pool.
Result<SimulationResult> simulate(const PerfModel& prefill_model, const PerfModel& decode_model,
                                  const WorkloadShape& workload, const Pools& pools, const SimulationOptions& options);

}  // namespace recgpt::capacity
