// The planner's answers hold up when checked by simulation: the chosen pools meet every objective and one node
// fewer in the pool it sized last misses one; no pool at all is claimed where none is big enough.
#include "capacity/planner.h"

#include <catch2/catch.hpp>

#include "tests/unit/capacity/test_shapes.h"

namespace recgpt::capacity {
namespace {

PerfModel test_model() {
  auto model =
      PerfModel::create(testing::qwen3_like(512, 8), testing::test_machine(2, 5e9), DType::kBF16, DType::kBF16, 16);
  REQUIRE(model.is_ok());
  return *model;
}

PlanRequest request_for(const PerfModel& model, double rate) {
  PlanRequest request;
  request.prefill_model = &model;
  request.decode_model = &model;
  request.workload.workflow = "test";
  request.workload.system_tokens = 32;
  request.workload.context_tokens = 1200;
  request.workload.stages = {{"planner", 1, 20, 40, 48}, {"experts", 3, 30, 24, 32}, {"arbiter", 1, 90, 16, 16}};
  request.baseline = request.workload;
  request.baseline.context_tokens = 3000;
  request.baseline.share_prefix = false;
  request.simulation.workflows_per_second = rate;
  request.simulation.duration_seconds = 60;
  request.objectives.ttft_p99_seconds = 0.5;
  request.objectives.itl_p99_seconds = 0.02;
  request.max_nodes = 32;
  return request;
}

TEST_CASE("the planned pools meet the objectives and one decode node fewer does not", "[capacity][planner]") {
  const PerfModel model = test_model();
  const PlanRequest request = request_for(model, 20);
  auto plan = plan_capacity(request);
  REQUIRE(plan.is_ok());
  INFO("missed: " << plan->disaggregated.missed << " | " << plan->colocated.missed << " | " << plan->baseline.missed);
  REQUIRE(plan->disaggregated.feasible);
  REQUIRE(plan->colocated.feasible);
  REQUIRE(plan->baseline.feasible);
  const Pools chosen = plan->disaggregated.pools;
  INFO("disaggregated " << chosen.prefill_nodes << "P + " << chosen.decode_nodes << "D, colocated "
                        << plan->colocated.nodes() << ", baseline " << plan->baseline.nodes());
  // Re-simulated independently of the search, with the planner's own settings.
  SimulationOptions options = request.simulation;
  options.max_step_tokens = plan->disaggregated.step_tokens;
  auto again = simulate(model, model, request.workload, chosen, options);
  REQUIRE(again.is_ok());
  CHECK(missed_objective(*again, request.objectives).empty());
  if (chosen.decode_nodes > 1) {
    Pools fewer = chosen;
    --fewer.decode_nodes;
    auto smaller = simulate(model, model, request.workload, fewer, options);
    REQUIRE(smaller.is_ok());
    CHECK_FALSE(missed_objective(*smaller, request.objectives).empty());
  }
  if (plan->colocated.nodes() > 1) {
    options.max_step_tokens = plan->colocated.step_tokens;
    auto smaller = simulate(model, model, request.workload, Pools{true, 0, plan->colocated.nodes() - 1}, options);
    REQUIRE(smaller.is_ok());
    CHECK_FALSE(missed_objective(*smaller, request.objectives).empty());
  }
  // The shared hybrid context costs less than every call encoding a 2.5x longer text context.
  CHECK(plan->baseline.nodes() > plan->colocated.nodes());
  CHECK(plan->disaggregated.result.prefill_tokens_per_workflow < plan->baseline.result.prefill_tokens_per_workflow / 4);
}

TEST_CASE("a load no pool within the limit serves is reported infeasible with the objective it misses",
          "[capacity][planner]") {
  const PerfModel model = test_model();
  PlanRequest request = request_for(model, 20);
  request.max_nodes = 1;
  auto plan = plan_capacity(request);
  REQUIRE(plan.is_ok());
  CHECK_FALSE(plan->baseline.feasible);
  CHECK_FALSE(plan->baseline.missed.empty());
  // An ITL objective below one step's fixed cost cannot be met by any number of nodes.
  request = request_for(model, 1);
  request.objectives.itl_p99_seconds = 1e-4;
  request.max_nodes = 4;
  plan = plan_capacity(request);
  REQUIRE(plan.is_ok());
  CHECK_FALSE(plan->disaggregated.feasible);
  CHECK_THAT(plan->disaggregated.missed, Catch::Contains("ITL p99"));
}

}  // namespace
}  // namespace recgpt::capacity
