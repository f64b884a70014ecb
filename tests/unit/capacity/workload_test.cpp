// A workflow's shape from its definition: fan-out sizes from options and lists, suffixes that grow with the
// earlier stages' outputs they quote, overrides that must name real stages.
#include "capacity/workload.h"

#include <catch2/catch.hpp>

namespace recgpt::capacity {
namespace {

router::WorkflowDefinition builtin(const std::string& name) {
  auto workflows = router::builtin_workflows();
  REQUIRE(workflows.is_ok());
  return workflows->at(name);
}

const StageShape& stage_named(const WorkloadShape& shape, const std::string& name) {
  for (const StageShape& stage : shape.stages) {
    if (stage.name == name) return stage;
  }
  FAIL("no stage " << name);
  return shape.stages.front();
}

TEST_CASE("the intent workflow is a planner, one expert per persona, and an arbiter", "[capacity][workload]") {
  WorkloadOptions options;
  options.context_tokens = 5158;
  auto shape = shape_workflow(builtin("intent"), options);
  REQUIRE(shape.is_ok());
  REQUIRE(shape->stages.size() == 3);
  CHECK(stage_named(*shape, "planner").calls == 1);
  CHECK(stage_named(*shape, "experts").calls == 3);  // the experts option's default
  CHECK(stage_named(*shape, "arbiter").calls == 1);
  CHECK(shape->calls() == 5);
  CHECK(shape->context_tokens == 5158);
  CHECK(shape->system_tokens > 0);
  // Outputs default to each step's max_tokens; the arbiter's prompt quotes every expert's output.
  const StageShape& experts = stage_named(*shape, "experts");
  CHECK(experts.output_tokens == experts.max_new_tokens);
  CHECK(stage_named(*shape, "arbiter").suffix_tokens >= experts.calls * experts.output_tokens);
  CHECK(shape->prompt_tokens() == 5 * (shape->system_tokens + 5158) + stage_named(*shape, "planner").suffix_tokens +
                                      3 * experts.suffix_tokens + stage_named(*shape, "arbiter").suffix_tokens);

  options.system_tokens = 100;  // given instead of estimated from the system text
  CHECK(shape_workflow(builtin("intent"), options)->system_tokens == 100);
  options.options["experts"] = 5;
  options.output_tokens["experts"] = 10;
  options.suffix_tokens["planner"] = 7;
  auto wider = shape_workflow(builtin("intent"), options);
  REQUIRE(wider.is_ok());
  CHECK(stage_named(*wider, "experts").calls == 5);
  CHECK(stage_named(*wider, "experts").output_tokens == 10);
  CHECK(stage_named(*wider, "planner").suffix_tokens == 7);
  CHECK(stage_named(*wider, "arbiter").suffix_tokens < stage_named(*shape, "arbiter").suffix_tokens);
}

TEST_CASE("a fan-out over a list runs one call per item", "[capacity][workload]") {
  auto shape = shape_workflow(builtin("judge"), WorkloadOptions{});
  REQUIRE(shape.is_ok());
  CHECK(stage_named(*shape, "evaluators").calls == 5);
  CHECK(stage_named(*shape, "reviewer").calls == 1);
}

TEST_CASE("overrides and options the workflow does not have are refused by name", "[capacity][workload]") {
  WorkloadOptions options;
  options.output_tokens["critic"] = 10;
  auto unknown_stage = shape_workflow(builtin("intent"), options);
  CHECK(unknown_stage.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(unknown_stage.status().message(), Catch::Contains("no stage 'critic'"));
  WorkloadOptions bad_option;
  bad_option.options["experts"] = 99;
  CHECK_THAT(shape_workflow(builtin("intent"), bad_option).status().message(),
             Catch::Contains("experts must be from 1 to 8"));
  WorkloadOptions unknown_option;
  unknown_option.options["personas"] = 2;
  CHECK_THAT(shape_workflow(builtin("intent"), unknown_option).status().message(),
             Catch::Contains("unknown workflow option 'personas'"));
  WorkloadOptions negative;
  negative.context_tokens = -1;
  CHECK(shape_workflow(builtin("intent"), negative).status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recgpt::capacity
