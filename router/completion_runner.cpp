#include "router/completion_runner.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>
#include <vector>

#include "common/log.h"
#include "router/logprob_entries.h"
#include "router/stop_matcher.h"
#include "router/token_timing.h"

namespace recgpt::router {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

// One of a completion's choices: its call (continued once on another pair when its node fails), the text the
// client sees of it (cut at the stop strings) and its logprobs.
struct ChoiceRun {
  ChoiceRun(const Tokenizer& tokenizer, const CompletionRequest& request, CallPlan call_plan, Clock::time_point start)
      : plan(std::move(call_plan)),
        text(tokenizer, request.stop, request.min_tokens),
        logprob_entries(tokenizer),
        timing(start) {
    if (request.logprobs) result.logprobs.emplace();
  }
  CallPlan plan;
  StopMatcher text;
  LogprobEntries logprob_entries;
  TokenTiming timing;
  CompletionChoice result;
  CallCancel cancel;
  bool first_chunk = true;
  std::vector<int32_t> generated;  // every token of the call, across the pairs it ran on (its completion tokens)
  Result<CallOutcome> outcome = unavailable("the choice did not run");
};

// What every choice of one completion shares.
struct CompletionContext {
  const CompletionServices& services;
  http::Exchange& exchange;
  const CompletionRequest& request;
  const CompletionResult& head;  // id, created, model
  EventWriter& events;
};

// Runs one choice to its end: its chunks stream as they come (its last one with its finish reason), or its text
// and logprobs collect in choice.result. `on_decoding` runs once, with the call's second chunk of tokens: the
// first is the prefill node's first token, the second the decode node's, which by then holds the prompt's blocks
// in its prefix index (when the decode node prefilled the call itself, one chunk later than needed).
asio::awaitable<void> run_choice(const CompletionContext& context, int index, ChoiceRun& choice,
                                 std::function<void()> on_decoding) {
  const CompletionServices& services = context.services;
  const CompletionRequest& request = context.request;
  const Endpoint endpoint = request.endpoint;
  int chunks = 0;
  TokenSink sink = [&](std::vector<int32_t> tokens, std::vector<TokenLogprobs> logprobs) -> asio::awaitable<bool> {
    if (++chunks == 2 && on_decoding) std::exchange(on_decoding, nullptr)();
    choice.timing.arrived(tokens.size());
    choice.generated.insert(choice.generated.end(), tokens.begin(), tokens.end());
    std::vector<LogprobEntry> entries;
    if (request.logprobs) entries = choice.logprob_entries.add(tokens, logprobs);
    const bool go_on = choice.text.push(tokens);
    std::string piece = choice.text.take();
    // With logprobs every token's chunk goes out, its text held back (a stop string's start) or not.
    if (request.stream && (!piece.empty() || choice.first_chunk || !entries.empty())) {
      std::string chunk = chunk_json(endpoint, context.head, index, piece, choice.first_chunk, "",
                                     request.logprobs ? &entries : nullptr);  // named: GCC 12 and temporaries
      co_await context.events.send(std::move(chunk));
      choice.first_chunk = false;
    } else {
      choice.result.text += piece;
      if (request.logprobs) {
        choice.result.logprobs->insert(choice.result.logprobs->end(), entries.begin(), entries.end());
      }
    }
    co_return go_on && !context.exchange.client_gone();
  };
  choice.outcome =
      co_await run_call(services.cluster, services.policy, services.counter++, choice.plan, sink, choice.cancel);
  // A node that failed (e.g. the decode node died mid-call): the call goes on on another pair from the tokens it
  // generated, streamed to the client or not (migration). Once: a request that kills its nodes must not take
  // the whole cluster down.
  if (!choice.outcome.is_ok() && choice.outcome.status().code() == StatusCode::kUnavailable &&
      !choice.cancel.cancelled() && !context.exchange.client_gone() && Clock::now() < choice.plan.deadline &&
      can_continue(choice.plan, choice.generated)) {
    log_event(LogLevel::kWarning, "router", "call failed, continuing it on another pair",
              {{"request", context.head.id},
               {"choice", static_cast<int64_t>(index)},
               {"error", choice.outcome.status().to_string()},
               {"tokens_before", static_cast<int64_t>(choice.generated.size())}});
    services.metrics.call_continued();
    const CallPlan continued = continued_plan(choice.plan, choice.generated);  // run_call keeps references
    choice.outcome =
        co_await run_call(services.cluster, services.policy, services.counter++, continued, sink, choice.cancel);
  }
  services.metrics.completion_tokens_arrived(choice.timing);
  if (!choice.outcome.is_ok()) co_return;
  choice.text.finish();
  const std::string rest = choice.text.take();
  // "constraint": the decoding constraint allowed nothing more (its list is complete).
  const std::string& reason = choice.outcome->finish_reason;
  choice.result.finish_reason = choice.text.matched() || reason == "stop" || reason == "constraint" ? "stop" : "length";
  if (request.stream && !context.exchange.client_gone()) {
    const std::vector<LogprobEntry> none;
    std::string last = chunk_json(endpoint, context.head, index, rest, choice.first_chunk, choice.result.finish_reason,
                                  request.logprobs ? &none : nullptr);
    co_await context.events.send(std::move(last));
  } else {
    choice.result.text += rest;
  }
}

}  // namespace

asio::awaitable<CompletionRun> run_completion(const CompletionServices& services, http::Exchange& exchange,
                                              EventWriter& events, const CompletionRequest& request,
                                              const CallPlan& plan, const CompletionResult& head,
                                              Clock::time_point received) {
  // Choice i samples with the seed + i (vLLM's rule), so seeded choices differ and repeat.
  std::vector<std::unique_ptr<ChoiceRun>> choices;
  for (int i = 0; i < request.n; ++i) {
    CallPlan choice_plan = plan;
    choice_plan.call.sampling.seed += static_cast<uint64_t>(i);
    choices.push_back(std::make_unique<ChoiceRun>(services.tokenizer, request, std::move(choice_plan), received));
  }
  const auto cancel_all = [&choices] {
    for (auto& choice : choices) choice->cancel.cancel();
  };
  // A client that goes away cancels every choice; the notice is withdrawn before `choices` go.
  exchange.on_client_gone(cancel_all);
  struct NoticeWithdrawal {
    http::Exchange& exchange;
    ~NoticeWithdrawal() {
      exchange.on_client_gone([] {});
    }
  } withdrawal{exchange};
  const CompletionContext context{services, exchange, request, head, events};
  // Choice 0 first, the others once its decode node streams: the prompt's KV is then held by both of its nodes
  // (prefix indexes), which the placement prefers, so the others compute and move only what it does not cover.
  int running = 0;
  bool others_started = false;
  asio::steady_timer others_done(services.io, asio::steady_timer::time_point::max());
  const auto start_others = [&] {
    if (std::exchange(others_started, true)) return;
    for (int i = 1; i < request.n; ++i) {
      ++running;
      const std::function<void()> no_hook;  // named: GCC 12 and temporaries passed to coroutines
      asio::co_spawn(services.io, run_choice(context, i, *choices[i], no_hook), [&, i](std::exception_ptr failure) {
        if (failure || !choices[i]->outcome.is_ok()) cancel_all();  // the request fails anyway
        if (--running == 0) others_done.cancel();
      });
    }
  };
  // Coroutine arguments are named: GCC 12 mishandles temporaries passed to coroutines.
  std::function<void()> when_decoding = request.n > 1 ? std::function<void()>(start_others) : nullptr;
  co_await run_choice(context, 0, *choices[0], std::move(when_decoding));
  if (!choices[0]->outcome.is_ok()) {
    cancel_all();
  } else if (request.n > 1) {
    start_others();  // choice 0 ended at its first token (e.g. max_tokens 1): nothing came from a decode node
  }
  while (running > 0) {
    boost::system::error_code ignored;
    co_await others_done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }

  // A cancelled call ends with an outcome: a failed one is a choice's own failure (or, after choice 0's, one
  // that never ran).
  CompletionRun run;
  for (const auto& choice : choices) {
    if (!choice->outcome.is_ok()) {
      run.status = choice->outcome.status();
      co_return run;
    }
  }
  if (exchange.client_gone()) co_return run;
  CompletionResult& result = run.result;
  result = head;
  // The prompt counts once, as the first choice ran it; the completions of every choice.
  const CallOutcome& first = *choices[0]->outcome;
  result.usage.cached_tokens = std::min(first.cached_tokens, result.usage.prompt_tokens);
  result.prefill_node = first.prefill_node;
  result.decode_node = first.decode_node;
  double first_token_seconds = 0;
  for (const auto& choice : choices) {
    result.usage.completion_tokens += static_cast<int64_t>(choice->generated.size());
    const double seconds = choice->timing.first_token_seconds().value_or(0);
    if (first_token_seconds == 0 || (seconds > 0 && seconds < first_token_seconds)) first_token_seconds = seconds;
    result.choices.push_back(std::move(choice->result));
  }
  result.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - received).count();
  result.ttft_ms = first_token_seconds * 1e3;
  co_return run;
}

}  // namespace recgpt::router
