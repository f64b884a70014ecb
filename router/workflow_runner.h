// Runs one workflow (router/workflow_definition.h) for one request over the cluster: each step's agent calls as
// coroutines (a fan-out's calls concurrently), each under the step's decoding constraint, stage deadline and
// retry budget; the outputs parsed and handed to the next steps' templates. Every agent's prompt starts with the
// same user context, so after the first call the context's KV is a cached prefix; all calls prefer the pair the
// first one ran on (workflow affinity). With `v1`, each agent instead reads its own copy of the whole text
// context after an agent-specific header: the V1-style baseline, no sharing.
//
// A call that fails is run again (its step's `retries`) while its stage deadline allows; past it, the call is
// dropped and the workflow goes on with the calls that finished (the result says which were dropped).
//
// Threading: the cluster's io_context.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "router/call_runner.h"
#include "router/workflow_definition.h"
#include "router/workflow_request.h"

namespace recgpt {
class Tokenizer;
}

namespace recgpt::router {

struct AgentRun {
  std::string item;                // the fan-out item; empty when the step does not fan out
  std::string text;                // the output (special tokens left out)
  std::vector<std::string> items;  // parsed from it (lines or choices)
  Status status;                   // ok, or why the call was dropped
  int attempts = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose KV was reused
  int64_t completion_tokens = 0;
  int64_t continued_tokens = 0;  // of those, generated on nodes that failed: the call went on from them
  std::string prefill_node;
  std::string decode_node;
  double ms = 0;
  std::optional<double> first_token_seconds;       // from the call's start (its first attempt's)
  std::optional<double> per_output_token_seconds;  // mean, after the first token (router/token_timing.h)
};

struct StepRun {
  std::string name;
  bool json = false;  // its calls' items are each one JSON value's text
  std::vector<AgentRun> calls;
  double ms = 0;
  std::vector<std::string> items() const;  // every call's items, in order, each once
};

struct WorkflowRun {
  std::vector<StepRun> steps;
  double ms = 0;
};

// What the router gives every agent call.
struct AgentCallSettings {
  const Tokenizer* tokenizer = nullptr;
  node::EntityShape entities;
  std::vector<int32_t> stop_tokens;  // the first ends constrained lists
  int block_size = 16;
  PolicyOptions policy;
  int64_t context_limit = 0;  // the model's context: prompt + max_tokens must fit
};

// Runs after each step (e.g. to stream it as an event).
using StepDone = std::function<boost::asio::awaitable<void>(const StepRun&)>;

// Lets the router end a workflow from outside (its client went away): the agent calls running are cancelled
// (CallCancel: on their nodes too), and no step, call or retry starts after. Same thread as the workflow.
class WorkflowCancel {
 public:
  void cancel();
  bool cancelled() const { return cancelled_; }
  // While a call is attached, cancel() cancels it too (at once if the workflow already is).
  void attach(CallCancel& call);
  void detach(CallCancel& call) { std::erase(calls_, &call); }

 private:
  bool cancelled_ = false;
  std::vector<CallCancel*> calls_;
};

// The run's steps are those that ran: all of the definition's, unless `cancel` ended it early (then the last one
// may have calls dropped as cancelled).
boost::asio::awaitable<WorkflowRun> run_workflow(Cluster& cluster, const AgentCallSettings& settings, uint64_t& counter,
                                                 const WorkflowDefinition& definition, const WorkflowRequest& request,
                                                 const HybridContext& context, rpc::Deadline deadline,
                                                 StepDone step_done, WorkflowCancel& cancel);

}  // namespace recgpt::router
