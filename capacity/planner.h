// `recgpt plan`'s search: the smallest pools that serve a workflow load within its latency objectives, found by
// simulating candidate pools (capacity/simulator.h) under one seed, so every candidate sees the same arrivals.
//
//   disaggregated  the fewest prefill nodes whose TTFT p99 holds with decode nodes to spare (as many as the
//                  colocated pool has), then the fewest decode nodes with which every objective holds;
//   colocated      the fewest colocated nodes (prefill chunks and decode tokens share steps);
//   baseline       colocated, serving the baseline workload (RecGPT-V1's way: every call encodes its own, full
//                  text context).
// Each search doubles a pool until it passes, then bisects between the last failing and the first passing
// size: it assumes more nodes never hurt, which holds for these policies up to the simulation's noise. Pools
// that compute prompts are searched under several step budgets (the configured one and its halvings down to
// 256 tokens, as one tunes vLLM's max_num_batched_tokens), the smallest pool kept.
#pragma once

#include <string>

#include "capacity/simulator.h"

namespace recgpt::capacity {

struct Objectives {
  double ttft_p99_seconds = 2;
  double itl_p99_seconds = 0.05;
  double workflow_p99_seconds = 0;  // 0: none
};

// The first objective `result` misses ("TTFT p99 2.31 s > 2 s"), or empty when it meets them all.
std::string missed_objective(const SimulationResult& result, const Objectives& objectives);

struct PoolPlan {
  bool feasible = false;  // false: not even `max_nodes` per pool meets the objectives
  Pools pools;
  int64_t step_tokens = 0;  // the step budget (chunked prefill) its nodes run with
  SimulationResult result;  // of `pools` (the largest tried when not feasible)
  std::string missed;       // what the largest pool tried missed, when not feasible
  int nodes() const { return pools.colocated ? pools.decode_nodes : pools.prefill_nodes + pools.decode_nodes; }
};

// `result` of simulating `pools` at `step_tokens`, judged against `objectives`.
PoolPlan judged(Pools pools, int64_t step_tokens, SimulationResult result, const Objectives& objectives);

struct PlanRequest {
  const PerfModel* prefill_model = nullptr;
  const PerfModel* decode_model = nullptr;  // the colocated pools run on this hardware too
  WorkloadShape workload;
  WorkloadShape baseline;
  SimulationOptions simulation;
  Objectives objectives;
  int max_nodes = 64;  // per pool
};

struct Plan {
  PoolPlan disaggregated;
  PoolPlan colocated;
  PoolPlan baseline;
  int simulations = 0;
};

Result<Plan> plan_capacity(const PlanRequest& request);

}  // namespace recgpt::capacity
