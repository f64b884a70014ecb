// A completion request's `n` choices across the cluster (docs/api.md): each is its own call, sampled with the
// seed + i and continued once on another pair when its node fails. Choice 0 runs first and the others start once
// its decode node streams, so they reuse the prompt's KV its nodes hold. A streamed request's chunks go out through
// the caller's EventWriter as they come, each choice's last with its finish reason.
//
// Threading: the router's io_context; the choices are coroutines on it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>

#include "common/http/http_server.h"
#include "common/status.h"
#include "engine/tokenizer.h"
#include "router/call_runner.h"
#include "router/event_writer.h"
#include "router/openai_api.h"
#include "router/router_metrics.h"

namespace boost::asio {
class io_context;
}

namespace recgpt::router {

// What a completion's calls use of the router.
struct CompletionServices {
  boost::asio::io_context& io;
  Cluster& cluster;
  const PolicyOptions& policy;
  uint64_t& counter;  // numbers each call (placement tie-breaks)
  RouterMetrics& metrics;
  const Tokenizer& tokenizer;
};

// What the choices came to: `status` is the first failed choice's error, in choice order. On success `result` is
// `head` with every choice, the usage (the prompt once, with the cached tokens of choice 0, which ran it first;
// the completion tokens of all) and the timings. When the client goes away the choices are cancelled: `status`
// may then be ok, which the caller tells by exchange.client_gone().
struct CompletionRun {
  Status status = Status::ok();
  CompletionResult result;
};

// `head`: the response's id, created, model, tokens_as_ids and usage.prompt_tokens. `plan`: choice 0's call.
boost::asio::awaitable<CompletionRun> run_completion(const CompletionServices& services, http::Exchange& exchange,
                                                     EventWriter& events, const CompletionRequest& request,
                                                     const CallPlan& plan, const CompletionResult& head,
                                                     std::chrono::steady_clock::time_point received);

}  // namespace recgpt::router
