#include "capacity/planner.h"

#include <functional>
#include <optional>
#include <sstream>
#include <vector>

namespace recgpt::capacity {
namespace {

std::string over(const char* what, double value, double limit) {
  std::ostringstream text;
  text << what << " " << value << " s > " << limit << " s";
  return text.str();
}

struct Searched {
  int size = 0;  // the n found (max_n when none passed)
  PoolPlan plan;
};

// The smallest n in [1, max_n] whose pools `run(n)` finds feasible, doubling then bisecting. When none is, the
// pools of max_n, infeasible.
Result<Searched> smallest_passing(int max_n, const std::function<Result<PoolPlan>(int)>& run) {
  int failing = 0;  // largest size known to fail
  int passing = 0;  // smallest size known to pass
  PoolPlan best;
  for (int n = 1;; n = std::min(2 * n, max_n)) {
    RECGPT_ASSIGN_OR_RETURN(PoolPlan trial, run(n));
    if (trial.feasible) {
      passing = n;
      best = std::move(trial);
      break;
    }
    failing = n;
    if (n == max_n) return Searched{n, std::move(trial)};
  }
  while (passing - failing > 1) {
    const int middle = failing + (passing - failing) / 2;
    RECGPT_ASSIGN_OR_RETURN(PoolPlan trial, run(middle));
    if (trial.feasible) {
      passing = middle;
      best = std::move(trial);
    } else {
      failing = middle;
    }
  }
  return Searched{passing, std::move(best)};
}

// The step budgets tried for a pool that computes prompts: the configured one, then halvings down to
// kSmallestStepTokens. A smaller budget shortens the steps that decode tokens and waiting prompts share (lower
// ITL and head-of-line delay) at the cost of more steps (each pays the fixed overhead and reads the weights).
constexpr int64_t kSmallestStepTokens = 256;
std::vector<int64_t> step_budgets(int64_t largest) {
  std::vector<int64_t> budgets{largest};
  while (budgets.back() / 2 >= kSmallestStepTokens) budgets.push_back(budgets.back() / 2);
  return budgets;
}

// The smallest n over every step budget; ties go to the larger budget, since a budget is only searched below
// the best size found so far.
Result<Searched> smallest_over_budgets(int max_n, int64_t largest_budget,
                                       const std::function<Result<PoolPlan>(int, int64_t)>& run) {
  std::optional<Searched> best;
  for (int64_t budget : step_budgets(largest_budget)) {
    const int limit = best && best->plan.feasible ? best->size - 1 : max_n;
    if (limit < 1) break;
    RECGPT_ASSIGN_OR_RETURN(Searched found, smallest_passing(limit, [&](int n) { return run(n, budget); }));
    if (found.plan.feasible || !best) best = std::move(found);
  }
  return std::move(*best);
}

}  // namespace

std::string missed_objective(const SimulationResult& result, const Objectives& objectives) {
  if (result.overloaded) return "overloaded: the queues grow without bound";
  if (result.late) {
    std::ostringstream text;
    text << "TTFT p99 > " << objectives.ttft_p99_seconds << " s (stopped early: too many calls waited longer)";
    return text.str();
  }
  if (result.workflows == 0) return "no workflow finished within the measured window";
  if (result.ttft.p99 > objectives.ttft_p99_seconds)
    return over("TTFT p99", result.ttft.p99, objectives.ttft_p99_seconds);
  if (result.itl.p99 > objectives.itl_p99_seconds) return over("ITL p99", result.itl.p99, objectives.itl_p99_seconds);
  if (objectives.workflow_p99_seconds > 0 && result.workflow_latency.p99 > objectives.workflow_p99_seconds) {
    return over("workflow p99", result.workflow_latency.p99, objectives.workflow_p99_seconds);
  }
  return "";
}

namespace {

using TrialFn = std::function<Result<PoolPlan>(const WorkloadShape&, Pools, int64_t step_tokens, bool ttft_only)>;

// The designs that serve the workload as this project does: colocated first, whose size then lends the
// disaggregated prefill search its decode nodes to spare (they hold the same KV and run fewer steps, which keeps
// those runs small), then the decode pool under every objective.
Status plan_served_workload(const PlanRequest& request, const TrialFn& trial, Plan& plan) {
  const int64_t largest_budget = request.simulation.max_step_tokens;
  RECGPT_ASSIGN_OR_RETURN(Searched colocated,
                          smallest_over_budgets(request.max_nodes, largest_budget, [&](int nodes, int64_t budget) {
                            return trial(request.workload, Pools{true, 0, nodes}, budget, false);
                          }));
  plan.colocated = std::move(colocated.plan);
  auto size_prefill = [&](int spare_decode) {
    return smallest_over_budgets(request.max_nodes, largest_budget, [&](int nodes, int64_t budget) {
      return trial(request.workload, Pools{false, nodes, spare_decode}, budget, true);
    });
  };
  const int spare_decode = plan.colocated.feasible ? plan.colocated.nodes() : request.max_nodes;
  RECGPT_ASSIGN_OR_RETURN(Searched prefill, size_prefill(spare_decode));
  if (!prefill.plan.feasible && spare_decode < request.max_nodes) {  // the decode side may have been short
    RECGPT_ASSIGN_OR_RETURN(prefill, size_prefill(request.max_nodes));
  }
  if (!prefill.plan.feasible) {
    plan.disaggregated = std::move(prefill.plan);
    return Status::ok();
  }
  RECGPT_ASSIGN_OR_RETURN(
      Searched decode, smallest_passing(request.max_nodes, [&](int nodes) {
        return trial(request.workload, Pools{false, prefill.size, nodes}, prefill.plan.step_tokens, false);
      }));
  plan.disaggregated = std::move(decode.plan);
  return Status::ok();
}

}  // namespace

PoolPlan judged(Pools pools, int64_t step_tokens, SimulationResult result, const Objectives& objectives) {
  PoolPlan plan;
  plan.pools = pools;
  plan.step_tokens = step_tokens;
  plan.missed = missed_objective(result, objectives);
  plan.feasible = plan.missed.empty();
  plan.result = std::move(result);
  return plan;
}

Result<Plan> plan_capacity(const PlanRequest& request) {
  if (request.prefill_model == nullptr || request.decode_model == nullptr) {
    return invalid_argument("plan_capacity needs both performance models");
  }
  if (request.max_nodes < 1) return invalid_argument("--max-nodes must be at least 1");
  Plan plan;
  const TrialFn trial = [&](const WorkloadShape& workload, Pools pools, int64_t step_tokens,
                            bool ttft_only) -> Result<PoolPlan> {
    ++plan.simulations;
    SimulationOptions options = request.simulation;
    options.max_step_tokens = step_tokens;
    options.late_ttft_seconds = request.objectives.ttft_p99_seconds;
    RECGPT_ASSIGN_OR_RETURN(SimulationResult result,
                            simulate(*request.prefill_model, *request.decode_model, workload, pools, options));
    Objectives objectives = request.objectives;
    if (ttft_only) {  // the prefill search: decode nodes are plentiful, only the prompt side is judged
      objectives.itl_p99_seconds = 1e30;
      objectives.workflow_p99_seconds = 0;
    }
    return judged(pools, step_tokens, std::move(result), objectives);
  };
  RECGPT_RETURN_IF_ERROR(plan_served_workload(request, trial, plan));
  RECGPT_ASSIGN_OR_RETURN(
      Searched baseline,
      smallest_over_budgets(request.max_nodes, request.simulation.max_step_tokens, [&](int nodes, int64_t budget) {
        return trial(request.baseline, Pools{true, 0, nodes}, budget, false);
      }));
  plan.baseline = std::move(baseline.plan);
  return plan;
}

}  // namespace recgpt::capacity
