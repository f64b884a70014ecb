// The simulator against what is known without it: queueing theory for a single prefill server (M/D/1's
// Pollaczek-Khinchine mean wait), the roofline step time for a lone decoding sequence, exact prefix-reuse
// arithmetic for a workflow, and conservation (every call ends, every block comes back).
#include "capacity/simulator.h"

#include <catch2/catch.hpp>
#include <cmath>

#include "tests/unit/capacity/test_shapes.h"

namespace recgpt::capacity {
namespace {

// pushes take no time unless a test says otherwise
HardwareProfile test_hardware() { return testing::test_machine(1, 1e30); }

PerfModel perf(const HardwareProfile& hardware = test_hardware()) {
  auto model = PerfModel::create(testing::qwen3_like(256, 4), hardware, DType::kBF16, DType::kBF16, 16);
  REQUIRE(model.is_ok());
  return *model;
}

WorkloadShape single_call(int64_t context, int64_t output, int64_t max_new) {
  WorkloadShape shape;
  shape.workflow = "single";
  shape.context_tokens = context;
  shape.share_prefix = false;
  shape.stages.push_back({"only", 1, 0, output, max_new});
  return shape;
}

TEST_CASE("one prefill server with deterministic steps waits as M/D/1 predicts", "[capacity][simulator]") {
  const PerfModel model = perf();
  const int64_t prompt = 1024;
  StepWork one_prompt;
  one_prompt.prompt_tokens = prompt;
  one_prompt.prompt_attention_pairs = prompt * (prompt + 1) / 2.0;
  one_prompt.logits_rows = 1;
  const double service = model.step_seconds(one_prompt);
  const double load = GENERATE(0.5, 0.8);
  SimulationOptions options;
  options.workflows_per_second = load / service;
  options.duration_seconds = 60000 / options.workflows_per_second;  // 60000 calls
  options.max_step_tokens = prompt;                                 // one prompt per step: a deterministic server
  auto result = simulate(model, model, single_call(prompt, 1, 1), Pools{false, 1, 1}, options);
  REQUIRE(result.is_ok());
  REQUIRE_FALSE(result->overloaded);
  // Pollaczek-Khinchine for deterministic service: mean wait = rho * s / (2 (1 - rho)); TTFT adds the service.
  const double expected = service + load * service / (2 * (1 - load));
  INFO("load " << load << ", service " << service << " s, mean TTFT " << result->ttft.mean << " s, expected "
               << expected << " s");
  CHECK(result->ttft.mean == Approx(expected).epsilon(0.05));
  CHECK(result->prefill_utilization == Approx(load).epsilon(0.05));
  CHECK(result->ttft.count > 50000);
}

TEST_CASE("a lone sequence decodes at the roofline's step time for its length", "[capacity][simulator]") {
  const PerfModel model = perf();
  const int64_t prompt = 512;
  const int64_t output = 40;
  SimulationOptions options;
  options.workflows_per_second = 0.01;  // one call at a time: arrivals 100 s apart, each done in well under 1 s
  options.duration_seconds = 2000;
  auto result = simulate(model, model, single_call(prompt, output, output), Pools{false, 1, 1}, options);
  REQUIRE(result.is_ok());
  REQUIRE(result->itl.count > 0);
  const HardwareProfile hardware = test_hardware();
  // Memory-bound: the weights once, the sequence's KV read and one token's KV written, per step.
  auto step = [&](int64_t length) {
    const double bytes = model.weight_bytes() + static_cast<double>(length + 1) * model.kv_bytes_per_token();
    return hardware.step_overhead_seconds + bytes / (hardware.memory_bandwidth * hardware.bandwidth_efficiency);
  };
  CHECK(result->itl.p50 >= step(prompt + 1) * (1 - 1e-9));
  CHECK(result->itl.p99 <= step(prompt + output) * (1 + 1e-9));
  CHECK(result->itl.count == result->ttft.count * (output - 1));
}

TEST_CASE("step times spread log-normally by the profile's sigma, around the same mean", "[capacity][simulator]") {
  HardwareProfile noisy = test_hardware();
  noisy.step_time_sigma = 0.3;
  const PerfModel model = perf(noisy);
  const PerfModel exact = perf();
  const int64_t output = 401;  // 400 decode steps per call, each the same work but for one token of context
  SimulationOptions options;
  options.workflows_per_second = 0.01;  // one call at a time
  options.duration_seconds = 3000;
  auto spread = simulate(model, model, single_call(64, output, output), Pools{false, 1, 1}, options);
  auto steady = simulate(exact, exact, single_call(64, output, output), Pools{false, 1, 1}, options);
  REQUIRE(spread.is_ok());
  REQUIRE(steady.is_ok());
  REQUIRE(spread->itl.count > 10000);
  // A log-normal's p90 / p50 is exp(1.2816 sigma) and its mean is kept: exp(sigma z - sigma^2 / 2) has mean 1.
  CHECK(spread->itl.p90 / spread->itl.p50 == Approx(std::exp(1.2816 * 0.3)).epsilon(0.03));
  CHECK(spread->itl.mean == Approx(steady->itl.mean).epsilon(0.02));
  CHECK(steady->itl.p90 / steady->itl.p50 < 1.03);  // without noise only the growing context spreads the steps
}

TEST_CASE("the serving path's per-call overhead adds to every first token of an idle cluster",
          "[capacity][simulator]") {
  const PerfModel model = perf();
  SimulationOptions options;
  options.workflows_per_second = 0.01;  // one call at a time
  options.duration_seconds = 2000;
  auto bare = simulate(model, model, single_call(512, 4, 4), Pools{false, 1, 1}, options);
  options.call_overhead_seconds = 0.0125;
  auto served = simulate(model, model, single_call(512, 4, 4), Pools{false, 1, 1}, options);
  REQUIRE(bare.is_ok());
  REQUIRE(served.is_ok());
  REQUIRE(bare->ttft.count == served->ttft.count);
  CHECK(served->ttft.p50 == Approx(bare->ttft.p50 + 0.0125));
  CHECK(served->ttft.p99 == Approx(bare->ttft.p99 + 0.0125));
  CHECK(served->itl.p50 == Approx(bare->itl.p50));
}

TEST_CASE("a workflow computes and moves the shared context once and every call's own suffix",
          "[capacity][simulator]") {
  const PerfModel model = perf();
  WorkloadShape shape;
  shape.workflow = "intent-like";
  shape.system_tokens = 32;    // two blocks, shared by every workflow
  shape.context_tokens = 160;  // ten blocks, shared by one workflow's calls
  shape.stages = {{"planner", 1, 20, 30, 40}, {"experts", 3, 24, 12, 16}, {"arbiter", 1, 50, 10, 16}};
  SimulationOptions options;
  options.workflows_per_second = 0.05;  // one workflow at a time
  options.duration_seconds = 4000;
  auto shared = simulate(model, model, shape, Pools{false, 1, 1}, options);
  REQUIRE(shared.is_ok());
  REQUIRE(shared->workflows > 100);
  // After the first workflow the system text is held everywhere: each workflow computes its context once
  // (with the planner) and every call's suffix; the decode node lacks exactly the same tokens.
  const double own = 160 + 20 + 3 * 24 + 50;
  CHECK(shared->prefill_tokens_per_workflow == Approx(own));
  CHECK(shared->kv_bytes_per_workflow == Approx(own * model.kv_bytes_per_token()));
  CHECK(shared->prompt_tokens_per_workflow == Approx(5 * (32 + 160) + 20 + 3 * 24 + 50));
  CHECK(shared->blocks_left_reserved == 0);

  shape.share_prefix = false;  // isolated routes: every call computes its own context
  auto isolated = simulate(model, model, shape, Pools{false, 1, 1}, options);
  REQUIRE(isolated.is_ok());
  CHECK(isolated->prefill_tokens_per_workflow == Approx(5 * 160 + 20 + 3 * 24 + 50));
  CHECK(isolated->blocks_left_reserved == 0);
}

TEST_CASE("under load every call ends, every block returns, and colocated steps slow decoding",
          "[capacity][simulator]") {
  const PerfModel model = perf();
  WorkloadShape shape;
  shape.workflow = "loaded";
  shape.system_tokens = 16;
  shape.context_tokens = 900;
  shape.stages = {{"planner", 1, 20, 30, 40}, {"experts", 4, 24, 20, 24}, {"arbiter", 1, 50, 10, 16}};
  SimulationOptions options;
  options.workflows_per_second = 20;
  options.duration_seconds = 60;
  auto disaggregated = simulate(model, model, shape, Pools{false, 2, 2}, options);
  REQUIRE(disaggregated.is_ok());
  REQUIRE_FALSE(disaggregated->overloaded);
  CHECK(disaggregated->blocks_left_reserved == 0);
  CHECK(disaggregated->ttft.count == disaggregated->workflows * shape.calls());
  auto colocated = simulate(model, model, shape, Pools{true, 0, 2}, options);  // as many decoding nodes
  REQUIRE(colocated.is_ok());
  CHECK(colocated->blocks_left_reserved == 0);
  CHECK(colocated->kv_bytes_per_workflow == 0);
  // Prompt chunks share the colocated nodes' steps with decode tokens: the slowest token gaps grow.
  CHECK(colocated->itl.p99 > disaggregated->itl.p99);
}

TEST_CASE("an overloaded pool is reported as such, not as slow latencies", "[capacity][simulator]") {
  const PerfModel model = perf();
  SimulationOptions options;
  options.workflows_per_second = 2000;  // far beyond one node
  options.duration_seconds = 5;
  auto result = simulate(model, model, single_call(2000, 4, 4), Pools{false, 1, 1}, options);
  REQUIRE(result.is_ok());
  CHECK(result->overloaded);
  options.late_ttft_seconds = 0.5;
  auto stopped = simulate(model, model, single_call(2000, 4, 4), Pools{false, 1, 1}, options);
  REQUIRE(stopped.is_ok());
  CHECK(stopped->late);
  CHECK(stopped->simulated_seconds < result->simulated_seconds);
}

TEST_CASE("impossible simulations are refused with the reason", "[capacity][simulator]") {
  const PerfModel model = perf();
  SimulationOptions options;
  CHECK(simulate(model, model, single_call(10, 1, 1), Pools{false, 0, 1}, options).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(simulate(model, model, single_call(10, 1, 1), Pools{true, 0, 0}, options).status().code() ==
        StatusCode::kInvalidArgument);
  options.workflows_per_second = 0;
  CHECK(simulate(model, model, single_call(10, 1, 1), Pools{true, 0, 1}, options).status().code() ==
        StatusCode::kInvalidArgument);
  options.workflows_per_second = 1;
  const int64_t too_long = model.kv_blocks() * 16 + 1;
  CHECK_THAT(simulate(model, model, single_call(too_long, 1, 1), Pools{true, 0, 1}, options).status().message(),
             Catch::Contains("does not fit a node's pool"));
}

}  // namespace
}  // namespace recgpt::capacity
