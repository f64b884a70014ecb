// Workflow definitions as data: the shipped ones load; a bad one is refused naming its file and field; templates
// list and render their variables.
#include "router/workflow_definition.h"

#include <catch2/catch.hpp>

namespace recgpt::router {
namespace {

TEST_CASE("the shipped workflows load: intent, explain and judge", "[workflow]") {
  auto workflows = load_workflows(std::string(RECGPT_SOURCE_DIR) + "/workflows");
  REQUIRE(workflows.is_ok());
  REQUIRE(workflows->count("intent") == 1);
  REQUIRE(workflows->count("explain") == 1);
  REQUIRE(workflows->count("judge") == 1);
  const WorkflowDefinition& intent = workflows->at("intent");
  REQUIRE(intent.steps.size() == 3);
  CHECK(intent.steps[0].constraint.kind == ConstraintKind::kLines);
  CHECK(intent.steps[0].constraint.max_items_option == "experts");
  CHECK(intent.steps[1].fan_out_step == "planner");
  CHECK(intent.steps[1].constraint.catalogue == "tags");
  CHECK(intent.steps[2].constraint.kind == ConstraintKind::kItemsOf);
  CHECK(intent.steps[2].constraint.items_of == "experts");
  CHECK(workflows->at("judge").steps[0].fan_out_list.size() == 5);
  CHECK(load_workflows("/no/such/folder").status().code() == StatusCode::kNotFound);
}

TEST_CASE("a bad workflow definition is refused naming the file and the field", "[workflow]") {
  const std::string step = R"({"name": "a", "prompt": "hello"})";
  struct Case {
    std::string json;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"[]", "w.json: not a JSON object"},
      {R"({"name": "x"})", "w.json: steps must be a non-empty array"},
      {R"({"name": "Bad Name", "steps": [)" + step + "]}", "name must be lowercase"},
      {R"({"name": "x", "colour": 1, "steps": [)" + step + "]}", "colour is not a known field"},
      {R"({"name": "x", "steps": [{"prompt": "p"}]})", "steps[0].name is missing"},
      {R"({"name": "x", "steps": [)" + step + "," + step + "]}", "steps[1].name repeats 'a'"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "{{item}}"}]})", "steps[0].prompt uses {{item}}"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "{{steps.a.text}}"}]})", "steps[0].prompt uses {{steps.a"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "{{who}}"}]})", "unknown variable {{who}}"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "{{open"}]})", "unclosed"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "fan_out": "b"}]})", "steps[0].fan_out names no"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "constraint": {"kind": "regex"}}]})",
       "steps[0].constraint.kind must be"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "constraint": {"kind": "catalogue"}}]})",
       "steps[0].constraint.catalogue is missing"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "constraint": {"kind": "items_of", "items_of": "z"}}]})",
       "steps[0].constraint.items_of names no earlier step"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "constraint": {"kind": "lines", "max_items": "many"}}]})",
       "steps[0].constraint.max_items names no option"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "max_tokens": 0}]})", "steps[0].max_tokens must be"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "output": "xml"}]})", "steps[0].output must be"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "retries": 9}]})", "steps[0].retries must be"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "output": "json"}]})",
       "needs a constraint of kind json"},
      {R"({"name": "x", "steps": [{"name": "a", "prompt": "p", "constraint": {"kind": "json", "schema":
          {"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}}}]})",
       "steps[0].constraint.schema: keyword 'format' at '/properties/e'"},
  };
  for (const Case& c : cases) {
    INFO(c.json);
    auto parsed = parse_workflow(c.json, "w.json");
    REQUIRE_FALSE(parsed.is_ok());
    CHECK(parsed.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(parsed.status().message(), Catch::Contains(c.fragment));
  }
}

TEST_CASE("a JSON step keeps its schema in the file's key order", "[workflow]") {
  auto parsed = parse_workflow(R"({"name": "x", "steps": [{"name": "verdict", "prompt": "p", "output": "json",
      "constraint": {"kind": "json", "schema": {"type": "object", "properties": {"zeta": {"type": "boolean"},
      "alpha": {"enum": ["a", "b"]}}, "required": ["zeta", "alpha"]}}}, {"name": "free", "prompt": "p",
      "constraint": {"kind": "json"}}]})",
                               "w.json");
  REQUIRE(parsed.is_ok());
  const WorkflowStep& verdict = parsed->steps[0];
  CHECK(verdict.output == OutputKind::kJson);
  CHECK(verdict.constraint.kind == ConstraintKind::kJson);
  CHECK(
      verdict.constraint.json_schema ==
      R"({"type":"object","properties":{"zeta":{"type":"boolean"},"alpha":{"enum":["a","b"]}},"required":["zeta","alpha"]})");
  CHECK(parsed->steps[1].constraint.kind == ConstraintKind::kJson);
  CHECK(parsed->steps[1].constraint.json_schema.empty());
  CHECK(parsed->steps[1].output == OutputKind::kText);
}

TEST_CASE("templates list and render their variables", "[workflow]") {
  CHECK(template_variables("a {{x}} b {{steps.p.items}}").value() == std::vector<std::string>{"x", "steps.p.items"});
  CHECK(render_template("a {{x}} b {{y}} c", {{"x", "1"}}) == "a 1 b {{y}} c");
  CHECK(render_template("{{x}}{{x}}", {{"x", "ab"}}) == "abab");
}

}  // namespace
}  // namespace recgpt::router

namespace recgpt::router {
namespace {

TEST_CASE("the built-in workflows are the repository's workflows/ folder", "[workflow]") {
  auto builtin = builtin_workflows();
  auto folder = load_workflows(std::string(RECGPT_SOURCE_DIR) + "/workflows");
  REQUIRE(builtin.is_ok());
  REQUIRE(folder.is_ok());
  REQUIRE(builtin->size() == folder->size());
  for (const auto& [name, definition] : *folder) {
    REQUIRE(builtin->count(name) == 1);
    CHECK(builtin->at(name).steps.size() == definition.steps.size());
    CHECK(builtin->at(name).system == definition.system);
  }
}

}  // namespace
}  // namespace recgpt::router
