#include "router/workflow_runner.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "common/log.h"
#include "engine/tokenizer.h"
#include "router/token_timing.h"

namespace recgpt::router {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string trim(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  return std::string(text.substr(begin, text.find_last_not_of(" \t\r") - begin + 1));
}

std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> lines;
  for (size_t begin = 0; begin <= text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

// The items of an agent's output, as its step parses them.
std::vector<std::string> parse_output(const WorkflowStep& step, const std::string& text) {
  std::vector<std::string> items;
  if (step.output == OutputKind::kText) {
    if (std::string item = trim(text); !item.empty()) items.push_back(item);
    return items;
  }
  if (step.output == OutputKind::kJson) {  // one item: the value, compact; none when the output was cut short
    const auto value = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!value.is_discarded())
      items.push_back(value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    return items;
  }
  for (const std::string& line : lines_of(text)) {
    std::string_view rest = line;
    if (step.output == OutputKind::kLines && rest.rfind(step.line_prefix, 0) == 0)
      rest.remove_prefix(step.line_prefix.size());
    std::string item = step.output == OutputKind::kLines ? trim(rest) : std::string(rest);
    if (!item.empty()) items.push_back(std::move(item));
  }
  return items;
}

// What every agent of one workflow shares.
struct WorkflowState {
  Cluster& cluster;
  const AgentCallSettings& settings;
  uint64_t& counter;
  const WorkflowDefinition& definition;
  const WorkflowRequest& request;
  const HybridContext& context;
  WorkflowCancel& cancel;
  std::map<std::string, std::string> values;  // template variables
  int preferred_prefill = -1;                 // workflow affinity: the pair the first call ran on
  int preferred_decode = -1;
};

std::string agent_prompt(const WorkflowState& state, const WorkflowStep& step, const std::string& item,
                         const std::string& rendered) {
  // V1: each agent its own route, so an agent-specific header comes before the (text) context: nothing shared.
  const std::string header = state.request.v1
                                 ? "You are the " + step.name + " agent" + (item.empty() ? "" : " for " + item) + ".\n"
                                 : std::string();
  return "<|im_start|>system\n" + header + state.definition.system + "\n" + state.context.text +
         "<|im_end|>\n<|im_start|>user\n" + rendered + "<|im_end|>\n<|im_start|>assistant\n";
}

Result<node::CallConstraint> constraint_of(const WorkflowState& state, const WorkflowStep& step,
                                           const std::vector<StepRun>& done) {
  const StepConstraint& given = step.constraint;
  node::CallConstraint constraint;
  constraint.max_items =
      given.max_items_option.empty() ? given.max_items : state.request.options.at(given.max_items_option);
  switch (given.kind) {
    case ConstraintKind::kNone: break;
    case ConstraintKind::kCatalogue: constraint.catalogue = given.catalogue; break;
    case ConstraintKind::kChoices: constraint.allowed = given.choices; break;
    case ConstraintKind::kItemsOf:
      for (const StepRun& earlier : done) {
        if (earlier.name == given.items_of) constraint.allowed = earlier.items();
      }
      if (constraint.allowed.empty()) {
        return failed_precondition("no items of step '" + given.items_of + "' to choose among");
      }
      break;
    case ConstraintKind::kLines:
      constraint.lines = true;
      constraint.line_prefix = given.line_prefix;
      constraint.max_line_tokens = given.max_line_tokens;
      break;
    case ConstraintKind::kJson:
      constraint.json = true;
      constraint.json_schema = given.json_schema;
      break;
  }
  return constraint;
}

// One agent call, retried while its stage deadline allows. A call whose node failed mid-generation goes on on
// another pair from the tokens it had (as completions do, router_service.cpp); any other failure starts it over.
asio::awaitable<void> run_agent(WorkflowState& state, const WorkflowStep& step, node::AgentCall call,
                                rpc::Deadline stage_deadline, AgentRun& out) {
  const auto start = Clock::now();
  out.prompt_tokens = static_cast<int64_t>(call.prompt.size());
  out.status = failed_precondition("the workflow was cancelled");  // unless a call runs
  std::vector<int32_t> tokens;                                     // generated so far, across the pairs the call ran on
  TokenTiming timing(start);  // every token received, attempts started over included
  for (int attempt = 0; attempt <= step.retries && !state.cancel.cancelled(); ++attempt) {
    ++out.attempts;
    CallPlan whole;
    whole.call = call;
    complete_plan(whole, state.settings.entities, state.settings.block_size, stage_deadline);
    const bool affinity = state.request.affinity && !state.request.v1;
    whole.preferred_prefill = affinity ? state.preferred_prefill : -1;
    whole.preferred_decode = affinity ? state.preferred_decode : -1;
    const CallPlan plan = tokens.empty() ? whole : continued_plan(whole, tokens);  // run_call keeps references
    const auto tokens_before = static_cast<int64_t>(tokens.size());
    TokenSink sink = [&tokens, &timing](std::vector<int32_t> more,
                                        std::vector<TokenLogprobs>) -> asio::awaitable<bool> {
      timing.arrived(more.size());
      tokens.insert(tokens.end(), more.begin(), more.end());
      co_return true;
    };
    CallCancel cancel;
    state.cancel.attach(cancel);
    auto outcome = co_await run_call(state.cluster, state.settings.policy, state.counter++, plan, sink, cancel);
    state.cancel.detach(cancel);
    if (cancel.cancelled()) {
      out.status = failed_precondition("the workflow was cancelled");
      break;
    }
    if (outcome.is_ok()) {
      out.status = Status::ok();
      out.text = state.settings.tokenizer->decode(tokens, true);
      out.items = parse_output(step, out.text);
      out.cached_tokens = std::min(outcome->cached_tokens, out.prompt_tokens);
      out.completion_tokens = tokens_before + outcome->completion_tokens;
      out.continued_tokens = tokens_before;
      out.prefill_node = outcome->prefill_node;
      out.decode_node = outcome->decode_node;
      if (state.preferred_decode < 0) {
        state.preferred_prefill = outcome->prefill_index;
        state.preferred_decode = outcome->decode_index;
      }
      break;
    }
    out.status = outcome.status();
    if (is_call_error(out.status) || Clock::now() >= stage_deadline) break;
    if (out.status.code() != StatusCode::kUnavailable || !can_continue(whole, tokens)) tokens.clear();
    log_event(LogLevel::kWarning, "workflow",
              tokens.empty() ? "agent call failed, retrying" : "agent call failed, continuing it on another pair",
              {{"step", step.name},
               {"item", out.item},
               {"error", out.status.to_string()},
               {"tokens_before", static_cast<int64_t>(tokens.size())}});
  }
  out.ms = ms_since(start);
  out.first_token_seconds = timing.first_token_seconds();
  out.per_output_token_seconds = timing.per_output_token_seconds();
}

// The calls of one step, concurrently.
asio::awaitable<StepRun> run_step(WorkflowState& state, const WorkflowStep& step, const std::vector<StepRun>& done,
                                  rpc::Deadline deadline) {
  const auto start = Clock::now();
  StepRun run;
  run.name = step.name;
  run.json = step.output == OutputKind::kJson;
  std::vector<std::string> fan_out = step.fan_out_list;
  if (!step.fan_out_step.empty()) {
    for (const StepRun& earlier : done) {
      if (earlier.name == step.fan_out_step) fan_out = earlier.items();
    }
  }
  if (!step.fans_out()) fan_out = {""};
  auto constraint = constraint_of(state, step, done);
  const rpc::Deadline stage_deadline = std::min(deadline, start + step.deadline);
  run.calls.resize(fan_out.size());
  std::vector<node::AgentCall> calls(fan_out.size());
  for (size_t i = 0; i < fan_out.size(); ++i) {
    AgentRun& agent = run.calls[i];
    agent.item = fan_out[i];
    if (!constraint.is_ok()) {
      agent.status = constraint.status();
      continue;
    }
    std::map<std::string, std::string> values = state.values;
    values["item"] = fan_out[i];
    node::AgentCall& call = calls[i];
    call.prompt =
        state.settings.tokenizer->encode(agent_prompt(state, step, fan_out[i], render_template(step.prompt, values)));
    call.entity_ids = state.context.entity_ids;
    call.entity_vectors = state.context.entity_vectors;
    const int64_t room = state.settings.context_limit - static_cast<int64_t>(call.prompt.size());
    call.max_new_tokens = static_cast<int32_t>(std::min<int64_t>(step.max_tokens, room));
    if (call.max_new_tokens < 2) {
      agent.status = invalid_argument("the prompt of step '" + step.name + "' leaves no room in the model's context");
      continue;
    }
    call.sampling.temperature = step.temperature;
    const uint64_t base = state.request.seed ? *state.request.seed : std::random_device()();
    call.sampling.seed = base ^ std::hash<std::string>()(step.name + "\n" + fan_out[i]);
    call.stop_tokens = state.settings.stop_tokens;
    call.constraint = *constraint;
  }
  auto executor = co_await asio::this_coro::executor;
  size_t running = 0;
  asio::steady_timer all_done(executor, Clock::time_point::max());
  for (size_t i = 0; i < calls.size(); ++i) {
    if (!run.calls[i].status.is_ok()) continue;  // refused above: it never runs
    ++running;
    node::AgentCall call = std::move(calls[i]);  // named: GCC 12 and coroutine temporaries
    asio::co_spawn(executor, run_agent(state, step, std::move(call), stage_deadline, run.calls[i]),
                   [&](std::exception_ptr) {
                     if (--running == 0) all_done.cancel();
                   });
  }
  if (running > 0) {
    boost::system::error_code ignored;
    co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  run.ms = ms_since(start);
  co_return run;
}

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const std::string& item : items) text += (text.empty() ? "" : "\n") + item;
  return text;
}

}  // namespace

void WorkflowCancel::cancel() {
  cancelled_ = true;
  for (CallCancel* call : std::exchange(calls_, {})) call->cancel();
}

void WorkflowCancel::attach(CallCancel& call) {
  if (cancelled_) {
    call.cancel();
    return;
  }
  calls_.push_back(&call);
}

std::vector<std::string> StepRun::items() const {
  std::vector<std::string> all;
  for (const AgentRun& call : calls) {
    for (const std::string& item : call.items) {
      if (std::find(all.begin(), all.end(), item) == all.end()) all.push_back(item);
    }
  }
  return all;
}

asio::awaitable<WorkflowRun> run_workflow(Cluster& cluster, const AgentCallSettings& settings, uint64_t& counter,
                                          const WorkflowDefinition& definition, const WorkflowRequest& request,
                                          const HybridContext& context, rpc::Deadline deadline, StepDone step_done,
                                          WorkflowCancel& cancel) {
  const auto start = Clock::now();
  WorkflowState state{cluster, settings, counter, definition, request, context, cancel, {}, -1, -1};
  for (const auto& [name, value] : request.options) state.values["options." + name] = std::to_string(value);
  state.values["request.item"] = request.item;
  state.values["request.candidate"] = request.candidate;
  std::string queries;
  for (const std::string& query : request.queries) queries += (queries.empty() ? "" : "; ") + query;
  state.values["request.queries"] = queries;
  std::string environment;
  for (const auto& [key, value] : request.environment)
    environment += (environment.empty() ? "" : "; ") + key + "=" + value;
  state.values["request.environment"] = environment;

  WorkflowRun run;
  for (const WorkflowStep& step : definition.steps) {
    if (cancel.cancelled()) break;
    StepRun done = co_await run_step(state, step, run.steps, deadline);
    std::vector<std::string> texts;
    for (const AgentRun& call : done.calls) {
      if (call.status.is_ok())
        texts.push_back(call.item.empty() ? trim(call.text) : call.item + ": " + trim(call.text));
    }
    state.values["steps." + step.name + ".text"] = join(texts);
    state.values["steps." + step.name + ".items"] = join(done.items());
    run.steps.push_back(std::move(done));
    if (step_done) co_await step_done(run.steps.back());
  }
  run.ms = ms_since(start);
  co_return run;
}

}  // namespace recgpt::router
