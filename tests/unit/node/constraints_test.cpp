// A node's JSON constraints from the wire: the router's call (node/agent_call.h) reaches a processor that
// writes JSON under the call's schema; bad combinations and schemas are refused by name; a schema sent again
// reuses its compiled grammar.
#include "node/constraints.h"

#include <catch2/catch.hpp>

#include "node/agent_call.h"
#include "tests/unit/engine/tiny_preset.h"

namespace recgpt::node {
namespace {

struct TinyNode {
  testing::TinyPreset tiny;
  std::unique_ptr<Constraints> constraints = Constraints::create(*tiny.model, {}).value();
};

// The sampling parameters a decode node receives for `call`.
control::SamplingParams on_the_wire(const AgentCall& call) {
  return make_start(call, 1, 5, 1, 1).start_decode().sampling();
}

AgentCall json_call(std::string schema) {
  AgentCall call;
  call.prompt = {1, 2, 3};
  call.stop_tokens = {0};
  call.constraint.json = true;
  call.constraint.json_schema = std::move(schema);
  return call;
}

TEST_CASE("a JSON constraint reaches the node and shapes the output", "[node][json]") {
  TinyNode node;
  const std::string schema = R"({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})";
  auto maker = node.constraints->maker(on_the_wire(json_call(schema)));
  REQUIRE(maker.is_ok());
  REQUIRE(*maker);
  auto processor = std::dynamic_pointer_cast<JsonProcessor>((*maker)(3));
  REQUIRE(processor != nullptr);
  CHECK(JsonMatcher(processor->matcher()).feed(R"({"ok": true})"));
  CHECK_FALSE(JsonMatcher(processor->matcher()).feed(R"({"no": true})"));

  // The same schema again: the same compiled grammar (its masks cached); json_object: any object.
  auto again = node.constraints->maker(on_the_wire(json_call(schema)));
  REQUIRE(again.is_ok());
  auto second = std::dynamic_pointer_cast<JsonProcessor>((*again)(3));
  CHECK(second->grammar() == processor->grammar());
  auto object = node.constraints->maker(on_the_wire(json_call("")));
  REQUIRE(object.is_ok());
  auto any = std::dynamic_pointer_cast<JsonProcessor>((*object)(3));
  CHECK(any->grammar() != processor->grammar());
  CHECK(JsonMatcher(any->matcher()).feed(R"({"anything": [1, "two"]})"));
  CHECK_FALSE(JsonMatcher(any->matcher()).feed("[1]"));
}

TEST_CASE("bad JSON constraints are refused by name", "[node][json]") {
  TinyNode node;
  const auto error = [&](const AgentCall& call) {
    auto maker = node.constraints->maker(on_the_wire(call));
    REQUIRE_FALSE(maker.is_ok());
    CHECK(maker.status().code() == StatusCode::kInvalidArgument);
    return maker.status().message();
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(error(json_call(R"({"type": "string", "format": "email"})")), Contains("'format'"));
  CHECK_THAT(error(json_call("{oops")), Contains("not valid JSON"));
  AgentCall with_choices = json_call("");
  with_choices.constraint.allowed = {"a"};
  CHECK_THAT(error(with_choices), Contains("no choices"));
  AgentCall without_stop = json_call("");
  without_stop.stop_tokens.clear();
  CHECK_THAT(error(without_stop), Contains("stop token"));
  AgentCall huge = json_call(R"({"description": ")" + std::string(Constraints::kMaxSchemaBytes, 'x') + R"("})");
  CHECK_THAT(error(huge), Contains("at most"));
}

}  // namespace
}  // namespace recgpt::node
