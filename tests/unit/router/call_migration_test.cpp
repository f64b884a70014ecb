// A call continued on another node pair from the tokens it generated (migration): the continued plan's prompt
// ends with them, it generates only the rest, its sampler draws after theirs and its block hashes cover the longer
// prompt; a call that generated the entity token, or all its tokens, cannot go on.
#include <catch2/catch.hpp>

#include "router/call_runner.h"

namespace recgpt::router {
namespace {

CallPlan plan_of(std::vector<int32_t> prompt, int32_t max_new_tokens) {
  CallPlan plan;
  plan.call.prompt = std::move(prompt);
  plan.call.max_new_tokens = max_new_tokens;
  plan.call.sampling.seed = 7;
  plan.call.sampling.first_draw = 2;  // itself continued once already
  complete_plan(plan, node::EntityShape{99, 4}, 4, rpc::Clock::now() + std::chrono::seconds(30));
  return plan;
}

TEST_CASE("a continued plan ends its prompt with the generated tokens and draws after them", "[router][migration]") {
  const CallPlan plan = plan_of({1, 2, 3, 4, 5, 6}, 10);
  CHECK(plan.block_hashes.size() == 1);
  const std::vector<int32_t> generated = {7, 8, 9};
  REQUIRE(can_continue(plan, generated));
  const CallPlan next = continued_plan(plan, generated);
  CHECK(next.call.prompt == std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(next.call.max_new_tokens == 7);
  CHECK(next.call.sampling.first_draw == 5);
  CHECK(next.call.sampling.seed == 7);
  CHECK(next.deadline == plan.deadline);
  CHECK(next.block_hashes.size() == 2);  // 9 tokens: two full blocks of 4
  CHECK(next.block_hashes[0] == plan.block_hashes[0]);
}

TEST_CASE("a call that generated the entity token or all its tokens cannot go on", "[router][migration]") {
  const CallPlan plan = plan_of({1, 2, 3}, 3);
  CHECK(can_continue(plan, std::vector<int32_t>{}));
  CHECK(can_continue(plan, std::vector<int32_t>{5, 6}));
  CHECK_FALSE(can_continue(plan, std::vector<int32_t>{5, 99}));  // its vector would be missing
  CHECK_FALSE(can_continue(plan, std::vector<int32_t>{5, 6, 7}));
}

}  // namespace
}  // namespace recgpt::router
