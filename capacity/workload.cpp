#include "capacity/workload.h"

#include <algorithm>

namespace recgpt::capacity {
namespace {

Result<std::map<std::string, int32_t>> resolve_options(const std::map<std::string, int32_t>& given) {
  std::map<std::string, int32_t> options;
  for (const router::WorkflowOptionLimit& limit : router::kWorkflowOptions) options[limit.name] = limit.default_value;
  for (const auto& [name, value] : given) {
    auto limit = std::find_if(std::begin(router::kWorkflowOptions), std::end(router::kWorkflowOptions),
                              [&](const router::WorkflowOptionLimit& option) { return name == option.name; });
    if (limit == std::end(router::kWorkflowOptions)) return invalid_argument("unknown workflow option '" + name + "'");
    if (value < 1 || value > limit->max_value) {
      return invalid_argument("workflow option " + name + " must be from 1 to " + std::to_string(limit->max_value));
    }
    options[name] = value;
  }
  return options;
}

Status check_stages_exist(const router::WorkflowDefinition& workflow, const std::map<std::string, int64_t>& overrides,
                          const char* what) {
  for (const auto& [name, value] : overrides) {
    auto step = std::find_if(workflow.steps.begin(), workflow.steps.end(),
                             [&](const router::WorkflowStep& candidate) { return candidate.name == name; });
    if (step == workflow.steps.end()) {
      return invalid_argument(std::string(what) + ": workflow '" + workflow.name + "' has no stage '" + name + "'");
    }
    if (value < 0) return invalid_argument(std::string(what) + ": " + name + " must not be negative");
  }
  return Status::ok();
}

// How many items a step's output holds: its constraint's item limit (what a constrained step writes at most).
int64_t items_of(const router::WorkflowStep& step, const std::map<std::string, int32_t>& options) {
  const auto& constraint = step.constraint;
  return constraint.max_items_option.empty() ? constraint.max_items : options.at(constraint.max_items_option);
}

}  // namespace

int64_t estimated_tokens(size_t bytes) { return static_cast<int64_t>((bytes + 3) / 4); }

int64_t WorkloadShape::calls() const {
  int64_t total = 0;
  for (const StageShape& stage : stages) total += stage.calls;
  return total;
}

int64_t WorkloadShape::prompt_tokens() const {
  int64_t total = 0;
  for (const StageShape& stage : stages) {
    total += stage.calls * (system_tokens + context_tokens + stage.suffix_tokens);
  }
  return total;
}

// A stage's own prompt: its template's text, plus what each {{variable}} expands to: an earlier stage's output
// (all of its calls'), the fan-out item (one item of the stage it fans out over), a request field, an option.
Result<WorkloadShape> shape_workflow(const router::WorkflowDefinition& workflow, const WorkloadOptions& given) {
  if (given.context_tokens < 0) return invalid_argument("context tokens must not be negative");
  if (given.request_field_tokens < 0) return invalid_argument("request field tokens must not be negative");
  RECGPT_ASSIGN_OR_RETURN(auto options, resolve_options(given.options));
  RECGPT_RETURN_IF_ERROR(check_stages_exist(workflow, given.output_tokens, "--output-tokens"));
  RECGPT_RETURN_IF_ERROR(check_stages_exist(workflow, given.suffix_tokens, "--suffix-tokens"));
  WorkloadShape shape;
  shape.workflow = workflow.name;
  shape.system_tokens = given.system_tokens >= 0 ? given.system_tokens : estimated_tokens(workflow.system.size());
  shape.context_tokens = given.context_tokens;
  std::map<std::string, size_t> earlier;  // index into shape.stages
  std::map<std::string, int64_t> items;
  for (const router::WorkflowStep& step : workflow.steps) {
    StageShape stage;
    stage.name = step.name;
    stage.max_new_tokens = step.max_tokens;
    stage.output_tokens = given.output_tokens.count(step.name) ? given.output_tokens.at(step.name) : step.max_tokens;
    stage.output_tokens = std::max<int64_t>(1, std::min<int64_t>(stage.output_tokens, step.max_tokens));
    if (!step.fan_out_list.empty()) stage.calls = static_cast<int>(step.fan_out_list.size());
    if (!step.fan_out_step.empty()) stage.calls = static_cast<int>(items.at(step.fan_out_step));
    RECGPT_ASSIGN_OR_RETURN(std::vector<std::string> variables, router::template_variables(step.prompt));
    size_t literal_bytes = step.prompt.size();
    int64_t expanded = 0;
    for (const std::string& variable : variables) {
      literal_bytes -= std::min(literal_bytes, variable.size() + 4);
      const size_t dot = variable.find('.');
      const std::string head = variable.substr(0, dot);
      if (variable == "item") {
        if (!step.fan_out_step.empty()) {
          const StageShape& source = shape.stages[earlier.at(step.fan_out_step)];
          expanded += source.output_tokens * source.calls / std::max<int64_t>(1, items.at(step.fan_out_step));
        } else {
          expanded += 2;  // a fan-out list's word
        }
      } else if (head == "steps") {
        const std::string name = variable.substr(dot + 1, variable.rfind('.') - dot - 1);
        auto source = earlier.find(name);
        if (source != earlier.end()) {
          expanded += shape.stages[source->second].output_tokens * shape.stages[source->second].calls;
        }
      } else if (head == "request") {
        expanded += given.request_field_tokens;
      } else {
        expanded += 1;  // an option's number
      }
    }
    stage.suffix_tokens = given.suffix_tokens.count(step.name) ? given.suffix_tokens.at(step.name)
                                                               : estimated_tokens(literal_bytes) + expanded;
    items[step.name] = items_of(step, options);
    earlier[step.name] = shape.stages.size();
    shape.stages.push_back(stage);
  }
  return shape;
}

}  // namespace recgpt::capacity
