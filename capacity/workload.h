// The shape of one workflow as the capacity planner sees it: per stage, how many concurrent calls, how long
// each call's own prompt is after the shared context, how many tokens it generates and what its KV
// reservation covers. Derived from a workflow definition (router/workflow_definition.h) and the request's
// options; the planner's flags override any stage's figures.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "router/workflow_definition.h"

namespace recgpt::capacity {

struct StageShape {
  std::string name;
  int calls = 1;               // concurrent calls per workflow (a fan-out's item count)
  int64_t suffix_tokens = 0;   // each call's own prompt, after the system text and the user's context
  int64_t output_tokens = 0;   // generated per call
  int64_t max_new_tokens = 0;  // the budget its decode node reserves KV for (the step's max_tokens)
};

struct WorkloadShape {
  std::string workflow;
  int64_t system_tokens = 0;   // the workflow's system text: the same for every user
  int64_t context_tokens = 0;  // one user's context: the same for every call of one workflow
  // false: no call shares another's prefix (isolated routes, as RecGPT-V1 ran its reasoning routes).
  bool share_prefix = true;
  std::vector<StageShape> stages;

  int64_t calls() const;
  int64_t prompt_tokens() const;  // over every call of one workflow
};

struct WorkloadOptions {
  int64_t context_tokens = 0;
  int64_t system_tokens = -1;              // every call's shared lead; -1: estimated from the workflow's system text
  int64_t request_field_tokens = 32;       // each {{request.*}} a template names (item, candidate, environment)
  std::map<std::string, int32_t> options;  // the request's options (experts, ...); defaults from kWorkflowOptions
  std::map<std::string, int64_t> output_tokens;  // per stage; default: the step's max_tokens
  std::map<std::string, int64_t> suffix_tokens;  // per stage; default: estimated from its template (see .cpp)
};

// kInvalidArgument naming an override for a stage the workflow lacks, an unknown option or one out of range.
Result<WorkloadShape> shape_workflow(const router::WorkflowDefinition& workflow, const WorkloadOptions& options);

// Approximate tokens of English-like text: one per four bytes, as BPE vocabularies of this size average.
int64_t estimated_tokens(size_t bytes);

}  // namespace recgpt::capacity
