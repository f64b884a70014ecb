// The JSON of POST /v1/workflows/{name} answers (docs/api.md): each step's calls (item, output, parsed items,
// nodes, tokens, time, or why it was dropped), the workflow's output, usage with the hybrid context's
// compression, and per-stage timings. Pure functions over the run.
#pragma once

#include <string>

#include "router/workflow_runner.h"

namespace recgpt::router {

// One step, as a streamed stage event and as an element of the answer's `steps`.
std::string workflow_step_json(const std::string& workflow, const StepRun& step);
// The whole answer.
std::string workflow_result_json(const std::string& id, const WorkflowDefinition& definition,
                                 const WorkflowRequest& request, const HybridContext& context, const WorkflowRun& run);

}  // namespace recgpt::router
