// Workflows as data (../shared/DESIGN.md §2): a workflow is a list of agent steps, each a prompt template run once
// or fanned out over the previous outputs (one call per item, concurrently), under a decoding constraint, with an
// output parser, a stage deadline and a retry budget. Definitions are JSON files (workflows/*.json), loaded and
// validated at start; an error names the file and the field ("intent.json: steps[1].constraint.kind: ...").
//
// Every agent's prompt is the user's context first (shared by all agents of one workflow as a KV prefix), then
// the step's rendered prompt. Template variables, written {{name}}:
//   {{item}}                     the fan-out item (fan-out steps only)
//   {{steps.NAME.text}}          an earlier step's output text (a fan-out step's: "item: text" per line)
//   {{steps.NAME.items}}         an earlier step's parsed items, one per line
//   {{request.item}} {{request.candidate}} {{request.queries}} {{request.environment}}   from the request
//   {{options.experts}} {{options.tags_per_expert}} {{options.final_tags}}               the request's options
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace recgpt::router {

enum class ConstraintKind { kNone, kCatalogue, kChoices, kItemsOf, kLines, kJson };
enum class OutputKind { kText, kLines, kChoiceList, kJson };

struct StepConstraint {
  ConstraintKind kind = ConstraintKind::kNone;
  std::string catalogue;             // kCatalogue: a catalogue the nodes load (--catalogue name=path)
  std::vector<std::string> choices;  // kChoices
  std::string items_of;              // kItemsOf: an earlier step whose items are the choices
  std::string line_prefix;           // kLines
  int32_t max_line_tokens = 24;      // kLines
  std::string json_schema;           // kJson: the schema's JSON text (its keys in the file's order); empty: any object
  int32_t max_items = 1;             // or, when max_items_option is set, that option's value
  std::string max_items_option;
};

struct WorkflowStep {
  std::string name;
  std::string prompt;                     // template
  std::string fan_out_step;               // one call per item of this earlier step, or
  std::vector<std::string> fan_out_list;  // one call per item of this list
  StepConstraint constraint;
  OutputKind output = OutputKind::kText;
  std::string line_prefix;  // kLines output: stripped from each line
  int32_t max_tokens = 64;
  float temperature = 0.7f;
  std::chrono::milliseconds deadline{30000};
  int32_t retries = 1;  // a failed call runs again once more elsewhere, this many times

  bool fans_out() const { return !fan_out_step.empty() || !fan_out_list.empty(); }
};

struct WorkflowDefinition {
  std::string name;
  std::string description;
  std::string system;  // what every agent is told before the user's context
  std::vector<WorkflowStep> steps;
};

// The options a request may set, with their defaults and limits.
struct WorkflowOptionLimit {
  const char* name;
  int32_t default_value;
  int32_t max_value;
};
inline constexpr WorkflowOptionLimit kWorkflowOptions[] = {
    {"experts", 3, 8}, {"tags_per_expert", 5, 20}, {"final_tags", 5, 20}};

// Parses and validates one definition; errors are prefixed with `source` (a file name).
Result<WorkflowDefinition> parse_workflow(std::string_view json_text, const std::string& source);
// Every *.json in `dir`, by name; kInvalidArgument for a bad file or two with one name, kNotFound for no folder.
Result<std::map<std::string, WorkflowDefinition>> load_workflows(const std::string& dir);
// The workflows this binary carries (workflows/*.json of its source: intent, explain, judge).
Result<std::map<std::string, WorkflowDefinition>> builtin_workflows();

// The {{variables}} of a template, in order (without braces). kInvalidArgument for an unclosed "{{".
Result<std::vector<std::string>> template_variables(std::string_view text);
// `text` with every {{variable}} replaced from `values`; unknown ones are kept as written.
std::string render_template(std::string_view text, const std::map<std::string, std::string>& values);

}  // namespace recgpt::router
