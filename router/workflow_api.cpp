#include "router/workflow_api.h"

#include <nlohmann/json.hpp>

namespace recgpt::router {
namespace {

// ordered_json: a JSON step's values keep the order their schema wrote their keys in.
using json = nlohmann::ordered_json;

// A JSON step's call's value: its one item parsed; null when the output was cut short.
json value_of(const AgentRun& call) {
  return call.items.empty() ? json(nullptr) : json::parse(call.items.front(), nullptr, /*allow_exceptions=*/false);
}

json step_json(const StepRun& step) {
  json calls = json::array();
  for (const AgentRun& call : step.calls) {
    json item = {{"text", call.text},
                 {"items", call.items},
                 {"status", call.status.is_ok() ? "ok" : "dropped"},
                 {"attempts", call.attempts},
                 {"prompt_tokens", call.prompt_tokens},
                 {"cached_tokens", call.cached_tokens},
                 {"completion_tokens", call.completion_tokens},
                 {"continued_tokens", call.continued_tokens},
                 {"prefill_node", call.prefill_node},
                 {"decode_node", call.decode_node},
                 {"ms", call.ms}};
    if (!call.item.empty()) item["item"] = call.item;
    if (step.json) item["value"] = value_of(call);
    if (!call.status.is_ok()) item["error"] = call.status.to_string();
    calls.push_back(std::move(item));
  }
  return {{"name", step.name}, {"ms", step.ms}, {"items", step.items()}, {"calls", calls}};
}

const StepRun* find_step(const WorkflowRun& run, const std::string& name) {
  for (const StepRun& step : run.steps)
    if (step.name == name) return &step;
  return nullptr;
}

}  // namespace

std::string workflow_step_json(const std::string& workflow, const StepRun& step) {
  json event = step_json(step);
  event["object"] = "workflow.step";
  event["workflow"] = workflow;
  return event.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string workflow_result_json(const std::string& id, const WorkflowDefinition& definition,
                                 const WorkflowRequest& request, const HybridContext& context, const WorkflowRun& run) {
  json steps = json::array();
  json dropped = json::array();
  json stage_ms = json::object();
  int64_t prompt = 0, cached = 0, completion = 0;
  int calls = 0;
  for (const StepRun& step : run.steps) {
    steps.push_back(step_json(step));
    stage_ms[step.name] = step.ms;
    for (const AgentRun& call : step.calls) {
      prompt += call.prompt_tokens;
      cached += call.cached_tokens;
      completion += call.completion_tokens;
      calls += call.status.is_ok() ? 1 : 0;
      if (!call.status.is_ok())
        dropped.push_back({{"step", step.name}, {"item", call.item}, {"error", call.status.to_string()}});
    }
  }
  json output;
  if (definition.name == "intent") {
    const StepRun* planner = find_step(run, "planner");
    const StepRun* experts = find_step(run, "experts");
    const StepRun* arbiter = find_step(run, "arbiter");
    output["personas"] = planner ? planner->items() : std::vector<std::string>{};
    json expert_tags = json::array();
    if (experts) {
      for (const AgentRun& call : experts->calls) expert_tags.push_back({{"persona", call.item}, {"tags", call.items}});
    }
    output["expert_tags"] = expert_tags;
    output["final_tags"] = arbiter ? arbiter->items() : std::vector<std::string>{};
  } else if (!run.steps.empty()) {
    for (const StepRun& step : run.steps) {
      if (!step.json) {
        output[step.name] = step.items();
        continue;
      }
      // A step run once: its value; a fan-out: one per call, in order.
      json values = json::array();
      for (const AgentRun& call : step.calls) values.push_back(value_of(call));
      output[step.name] = step.calls.size() == 1 ? values.front() : values;
    }
  }
  const double ratio = context.hybrid_tokens > 0 ? static_cast<double>(context.text_tokens) / context.hybrid_tokens : 0;
  json body = {{"id", id},
               {"object", "workflow.result"},
               {"workflow", definition.name},
               {"mode", request.v1 ? "v1" : "hybrid"},
               {"output", output},
               {"steps", steps},
               {"dropped", dropped},
               {"usage",
                {{"prompt_tokens", prompt},
                 {"cached_tokens", cached},
                 {"computed_prompt_tokens", prompt - cached},
                 {"completion_tokens", completion},
                 {"calls", calls},
                 {"context",
                  {{"text_tokens", context.text_tokens},
                   {"hybrid_tokens", context.hybrid_tokens},
                   {"entities", context.entities},
                   {"compression_ratio", ratio}}}}},
               {"timings", {{"total_ms", run.ms}, {"steps", stage_ms}}}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace recgpt::router
