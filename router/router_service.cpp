#include "router/router_service.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "common/http/http_server.h"
#include "common/log.h"
#include "engine/block_hash.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "engine/tokenizer.h"
#include "node/entity_inputs.h"
#include "router/call_runner.h"
#include "router/event_writer.h"
#include "router/logprob_entries.h"
#include "router/openai_api.h"
#include "router/router_metrics.h"
#include "router/stop_matcher.h"
#include "router/workflow_api.h"
#include "router/workflow_runner.h"

namespace recgpt::router {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kWorkflowsPath = "/v1/workflows/";
// Tokens a workflow's context must leave for the agents' own prompts and outputs.
constexpr int64_t kWorkflowPromptRoom = 512;
// The status counted for a request whose client went away before its answer (nginx's "client closed request").
constexpr int kClientClosedRequest = 499;

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

http::Response json_response(int status, std::string body) {
  http::Response response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

http::Response error_response(const ApiError& error) { return json_response(error.status, error_json(error)); }

ApiError api_error(int status, std::string type, std::string message, std::string code = {}, std::string param = {}) {
  ApiError error;
  error.status = status;
  error.type = std::move(type);
  error.message = std::move(message);
  error.code = std::move(code);
  error.param = std::move(param);
  return error;
}

// A failed call as the client sees it.
ApiError call_error(const Status& status) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument: return api_error(400, "invalid_request_error", status.message());
    case StatusCode::kNotFound:
      return api_error(400, "invalid_request_error", status.message(), "entity_not_found", "entities");
    case StatusCode::kResourceExhausted: return api_error(503, "server_error", status.message(), "overloaded");
    case StatusCode::kDeadlineExceeded:
      return api_error(504, "server_error", "the request's deadline passed: " + status.message(), "timeout");
    default: return api_error(503, "server_error", status.message(), "unavailable");
  }
}

bool answered(const StepRun& step) {
  return std::any_of(step.calls.begin(), step.calls.end(), [](const AgentRun& call) { return call.status.is_ok(); });
}

// Why a workflow whose last step produced nothing failed: the first step none of whose calls answered (the steps
// after it failed for want of its output), by its first call's error.
Status workflow_failure(const WorkflowRun& run) {
  for (const StepRun& step : run.steps) {
    if (step.calls.empty() || answered(step)) continue;
    const Status& first = step.calls.front().status;
    return Status(first.code(), "step '" + step.name + "': every call failed; the first: " + first.message());
  }
  return unavailable("the last step ran no call");
}

bool is_completion_path(std::string_view path) { return path == "/v1/completions" || path == "/v1/chat/completions"; }

// Every path the router answers (others are 404, and counted as "other" in metrics).
bool is_known_path(std::string_view path) {
  return is_completion_path(path) || path == "/v1/models" || path == "/v1/cluster" || path == "/healthz" ||
         path == "/readyz" || path == "/metrics";
}

bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

class Service final : public std::enable_shared_from_this<Service> {
 public:
  Service(asio::io_context& io, const ModelFiles& model, RouterOptions options)
      : io_(io), model_(model), options_(std::move(options)) {}

  Status open() {
    RECGPT_ASSIGN_OR_RETURN(policy_.kind, parse_policy(options_.policy));
    std::vector<node::PeerAddress> prefill;
    std::vector<node::PeerAddress> decode;
    for (auto [texts, out] :
         {std::pair{&options_.prefill_nodes, &prefill}, std::pair{&options_.decode_nodes, &decode}}) {
      for (const std::string& text : *texts) {
        RECGPT_ASSIGN_OR_RETURN(node::PeerAddress address, node::parse_peer_address(text));
        out->push_back(std::move(address));
      }
    }
    if (decode.empty() && options_.decode_dns.empty()) {
      return invalid_argument("the router needs decode nodes (--decode host:port or --decode-dns name:port)");
    }
    RECGPT_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::load(model_.tokenizer_path()));
    tokenizer_ = std::make_unique<Tokenizer>(std::move(tokenizer));
    for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) {
      if (auto id = tokenizer_->token_to_id(stop)) stop_tokens_.push_back(*id);
    }
    const ModelConfig& config = model_.config();
    if (config.entity_adaptor) {
      entities_ = {config.entity_adaptor->entity_token_id, config.entity_adaptor->entity_dim};
      limits_.entity_dim = static_cast<size_t>(config.entity_adaptor->entity_dim);
    }
    if (options_.workflows_dir.empty()) {
      RECGPT_ASSIGN_OR_RETURN(workflows_, builtin_workflows());
    } else {
      RECGPT_ASSIGN_OR_RETURN(workflows_, load_workflows(options_.workflows_dir));
    }
    RECGPT_ASSIGN_OR_RETURN(entity_store_, node::open_entity_store(options_.entity_store, config));
    if (config.entity_adaptor) {
      if (auto text = tokenizer_->id_to_token(config.entity_adaptor->entity_token_id)) entity_token_text_ = *text;
      workflow_limits_.entity_dim = static_cast<size_t>(config.entity_adaptor->entity_dim);
    }
    RECGPT_ASSIGN_OR_RETURN(std::string fingerprint, model_fingerprint(model_));
    cluster_ = std::make_shared<Cluster>(io_, fingerprint, std::move(prefill), std::move(decode));
    cluster_->set_silence_limit(options_.node_silence);
    for (auto [names, tier] :
         {std::pair{&options_.prefill_dns, Tier::kPrefill}, std::pair{&options_.decode_dns, Tier::kDecode}}) {
      for (const std::string& text : *names) {
        RECGPT_ASSIGN_OR_RETURN(node::PeerAddress name, node::parse_peer_address(text));
        cluster_->add_dns_source(tier, std::move(name), options_.dns_refresh);
      }
    }

    http::ServerOptions server_options;
    server_options.address = options_.address;
    server_options.port = options_.port;
    server_options.max_body_bytes = options_.max_body_bytes;
    server_options.max_connections = options_.max_connections;
    std::weak_ptr<Service> weak = shared_from_this();
    RECGPT_ASSIGN_OR_RETURN(server_, http::Server::start(io_, server_options, [weak](http::Exchange& exchange) {
                              return handle(weak, exchange);
                            }));
    cluster_->start();
    return Status::ok();
  }

  uint16_t port() const { return server_->port(); }
  void drain(std::chrono::milliseconds within, std::function<void()> drained) {
    draining_ = true;
    server_->drain(within, std::move(drained));
  }
  void stop() {
    server_->stop();
    cluster_->stop();
  }

 private:
  static asio::awaitable<void> handle(std::weak_ptr<Service> weak, http::Exchange& exchange) {
    auto self = weak.lock();
    if (self == nullptr) co_return;
    co_await self->route(exchange);
  }

  asio::awaitable<void> route(http::Exchange& exchange) {
    const http::Request& request = exchange.request();
    const std::string& path = request.path;
    if (path.rfind("/v1/", 0) == 0 && !options_.api_key.empty() &&
        !same_secret(request.header("authorization"), "Bearer " + options_.api_key)) {
      http::Response denied = error_response(api_error(
          401, "authentication_error", "a valid API key is required (Authorization: Bearer ...)", "invalid_api_key"));
      co_await reply(exchange, std::move(denied));
      co_return;
    }
    if (path.rfind(kWorkflowsPath, 0) == 0 && request.method == "POST") {
      RouterMetrics::Running running = metrics_.running(path_label(path));
      co_await workflow(exchange, path.substr(kWorkflowsPath.size()));
      co_return;
    }
    if (is_completion_path(path) && request.method == "POST") {
      RouterMetrics::Running running = metrics_.running(path_label(path));
      co_await completion(exchange, path == "/v1/completions" ? Endpoint::kCompletions : Endpoint::kChatCompletions);
      co_return;
    }
    http::Response response = answer_get(request);
    co_await reply(exchange, std::move(response));
  }

  // Everything but a completion: small GET endpoints, or an error.
  http::Response answer_get(const http::Request& request) {
    const std::string& path = request.path;
    if (!is_known_path(path)) {
      return error_response(api_error(404, "invalid_request_error", "no route " + path, "not_found"));
    }
    const bool completions = is_completion_path(path);
    if (completions != (request.method == "POST") || (request.method != "GET" && request.method != "POST")) {
      return error_response(
          api_error(405, "invalid_request_error",
                    request.method + " is not allowed on " + path + "; use " + (completions ? "POST" : "GET"),
                    "method_not_allowed"));
    }
    if (path == "/v1/models") {
      nlohmann::json body = {
          {"object", "list"},
          {"data",
           {{{"id", options_.model_name}, {"object", "model"}, {"created", started_}, {"owned_by", "recgpt"}}}}};
      return json_response(200, body.dump());
    }
    if (path == "/v1/cluster") return json_response(200, cluster_->describe_json());
    http::Response text;
    text.content_type = "text/plain";
    if (path == "/healthz") {
      text.body = "ok\n";
    } else if (path == "/readyz") {
      const int decode = cluster_->healthy_count(Tier::kDecode);
      const int prefill = cluster_->healthy_count(Tier::kPrefill);
      const int usable_prefill = cluster_->usable_prefill_count();
      // Decode nodes prefill locally when no prefill node is healthy (or none's KV layout fits them): one decode
      // node can serve.
      const bool ready = !draining_ && decode > 0;
      text.status = ready ? 200 : 503;
      text.body = std::string(ready && usable_prefill == 0 ? "ready, degraded: decode nodes prefill locally"
                              : ready                      ? "ready"
                              : draining_                  ? "not ready: draining"
                                                           : "not ready: no healthy decode node") +
                  " (prefill " + std::to_string(prefill) + ", decode " + std::to_string(decode) + ")";
      if (ready && usable_prefill < prefill) {
        text.body += "; " + std::to_string(prefill - usable_prefill) +
                     " healthy prefill node(s) unused: KV layout fits no decode node (see /v1/cluster)";
      }
      text.body += "\n";
    } else {
      text.content_type = "text/plain; version=0.0.4; charset=utf-8";
      text.body = metrics_.serialize(*cluster_);
    }
    return text;
  }

  // POST /v1/workflows/{name}: one workflow for one user (router/workflow_runner.h), answered whole or, with
  // options.stream, as one event per step and then the whole answer.
  asio::awaitable<void> workflow(http::Exchange& exchange, std::string name) {
    const auto received = Clock::now();
    auto found = workflows_.find(name);
    if (found == workflows_.end()) {
      http::Response missing = error_response(
          api_error(404, "invalid_request_error", "no workflow named '" + name + "'", "workflow_not_found", "name"));
      co_await reply(exchange, std::move(missing));
      co_return;
    }
    const WorkflowDefinition& definition = found->second;
    auto parsed = parse_workflow_request(exchange.request().body, workflow_limits_);
    if (auto* error = std::get_if<ApiError>(&parsed)) {
      http::Response refused = error_response(*error);
      co_await reply(exchange, std::move(refused));
      co_return;
    }
    const WorkflowRequest& request = std::get<WorkflowRequest>(parsed);
    const HybridContext context =
        build_context(request, *tokenizer_, entity_store_ ? &*entity_store_ : nullptr, entity_token_text_, !request.v1);
    const int64_t context_limit = model_.config().max_position_embeddings;
    if (context.hybrid_tokens + kWorkflowPromptRoom > context_limit) {
      http::Response refused = error_response(invalid_request(
          "the user context is " + std::to_string(context.hybrid_tokens) + " tokens; with the agents' prompts it " +
              "exceeds the model's context of " + std::to_string(context_limit) + " tokens",
          "history", "context_length_exceeded"));
      co_await reply(exchange, std::move(refused));
      co_return;
    }
    const auto timeout = request.timeout_seconds ? std::chrono::duration_cast<std::chrono::milliseconds>(
                                                       std::chrono::duration<double>(*request.timeout_seconds))
                                                 : options_.request_timeout;
    const AgentCallSettings settings{tokenizer_.get(), entities_, stop_tokens_, block_size(), policy_, context_limit};
    bool streaming = false;
    StepDone step_done = [&](const StepRun& step) -> asio::awaitable<void> {
      if (!request.stream || exchange.client_gone()) co_return;
      if (!streaming) {
        streaming = true;
        co_await exchange.start_events();
      }
      const std::string event = workflow_step_json(name, step);
      co_await exchange.event(event);
    };
    // A client that goes away ends the workflow: its running calls are cancelled on their nodes.
    WorkflowCancel cancel;
    exchange.on_client_gone([&cancel] { cancel.cancel(); });
    const WorkflowRun run = co_await run_workflow(*cluster_, settings, counter_, definition, request, context,
                                                  received + timeout, step_done, cancel);
    if (cancel.cancelled() || exchange.client_gone()) {
      log_event(LogLevel::kInfo, "router", "workflow cancelled: the client went away",
                {{"workflow", name}, {"steps_run", static_cast<int64_t>(run.steps.size())}});
      count_request(exchange.request().path, kClientClosedRequest);
      co_return;
    }
    // The last step produced nothing: the workflow failed (every call of it was dropped).
    if (!answered(run.steps.back())) {
      co_await fail(exchange, call_error(workflow_failure(run)), streaming);
      co_return;
    }
    const std::string body =
        workflow_result_json("wf-" + std::to_string(next_id_++), definition, request, context, run);
    metrics_.workflow_answered(name, run, std::chrono::duration<double>(Clock::now() - received).count());
    if (exchange.client_gone()) co_return;
    if (request.stream) {
      if (!streaming) co_await exchange.start_events();
      co_await exchange.event(body);
      co_await exchange.event("[DONE]");
      count_request(exchange.request().path, 200);
    } else {
      http::Response answer = json_response(200, body);
      co_await reply(exchange, std::move(answer));
    }
  }

  // Answers `error`: as the last event of a stream already started, else as an error response.
  asio::awaitable<void> fail(http::Exchange& exchange, const ApiError& error, bool streaming) {
    if (streaming) {
      const std::string event = error_json(error);
      co_await exchange.event(event);
      co_await exchange.event("[DONE]");
      count_request(exchange.request().path, error.status);
    } else {
      http::Response failed = error_response(error);
      co_await reply(exchange, std::move(failed));
    }
  }

  // Named response: GCC 12 mishandles temporaries passed to coroutines.
  asio::awaitable<void> reply(http::Exchange& exchange, http::Response response) {
    const int status = response.status;
    co_await exchange.respond(std::move(response));
    count_request(exchange.request().path, status);
  }

  // One of a completion's choices: its call (continued once on another pair when its node fails), the text the
  // client sees of it (cut at the stop strings) and its logprobs.
  struct ChoiceRun {
    ChoiceRun(const Tokenizer& tokenizer, const CompletionRequest& request, CallPlan call_plan, Clock::time_point start)
        : plan(std::move(call_plan)), text(tokenizer, request.stop), logprob_entries(tokenizer), timing(start) {
      if (request.logprobs) result.logprobs.emplace();
    }
    CallPlan plan;
    StopMatcher text;
    LogprobEntries logprob_entries;
    TokenTiming timing;
    CompletionChoice result;
    CallCancel cancel;
    bool first_chunk = true;
    std::vector<int32_t> generated;  // every token of the call, across the pairs it ran on
    int64_t tokens_before = 0;       // generated on a pair that failed
    Result<CallOutcome> outcome = unavailable("the choice did not run");
  };

  // What every choice of one completion shares.
  struct CompletionContext {
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
    choice.outcome = co_await run_call(*cluster_, policy_, counter_++, choice.plan, sink, choice.cancel);
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
      metrics_.call_continued();
      choice.tokens_before = static_cast<int64_t>(choice.generated.size());
      const CallPlan continued = continued_plan(choice.plan, choice.generated);  // run_call keeps references
      choice.outcome = co_await run_call(*cluster_, policy_, counter_++, continued, sink, choice.cancel);
    }
    metrics_.completion_tokens_arrived(choice.timing);
    if (!choice.outcome.is_ok()) co_return;
    choice.text.finish();
    const std::string rest = choice.text.take();
    // "constraint": the decoding constraint allowed nothing more (its list is complete).
    const std::string& reason = choice.outcome->finish_reason;
    choice.result.finish_reason =
        choice.text.matched() || reason == "stop" || reason == "constraint" ? "stop" : "length";
    if (request.stream && !context.exchange.client_gone()) {
      const std::vector<LogprobEntry> none;
      std::string last = chunk_json(endpoint, context.head, index, rest, choice.first_chunk,
                                    choice.result.finish_reason, request.logprobs ? &none : nullptr);
      co_await context.events.send(std::move(last));
    } else {
      choice.result.text += rest;
    }
  }

  asio::awaitable<void> completion(http::Exchange& exchange, Endpoint endpoint) {
    const auto received = Clock::now();
    auto parsed = parse_completion_request(exchange.request().body, endpoint, limits_);
    if (auto* error = std::get_if<ApiError>(&parsed)) {
      http::Response refused = error_response(*error);
      co_await reply(exchange, std::move(refused));
      co_return;
    }
    const CompletionRequest& request = std::get<CompletionRequest>(parsed);
    auto planned = plan_call(request, received);
    if (auto* error = std::get_if<ApiError>(&planned)) {
      http::Response refused = error_response(*error);
      co_await reply(exchange, std::move(refused));
      co_return;
    }
    const CallPlan& plan = std::get<CallPlan>(planned);

    CompletionResult result;
    result.id = (endpoint == Endpoint::kCompletions ? "cmpl-" : "chatcmpl-") + std::to_string(next_id_++);
    result.created = unix_seconds();
    result.model = options_.model_name;
    result.tokens_as_ids = request.tokens_as_ids;
    result.usage.prompt_tokens = static_cast<int64_t>(plan.call.prompt.size());

    // Choice i samples with the seed + i (vLLM's rule), so seeded choices differ and repeat.
    std::vector<std::unique_ptr<ChoiceRun>> choices;
    for (int i = 0; i < request.n; ++i) {
      CallPlan choice_plan = plan;
      choice_plan.call.sampling.seed += static_cast<uint64_t>(i);
      choices.push_back(std::make_unique<ChoiceRun>(*tokenizer_, request, std::move(choice_plan), received));
    }
    const auto cancel_all = [&choices] {
      for (auto& choice : choices) choice->cancel.cancel();
    };
    exchange.on_client_gone(cancel_all);
    EventWriter events(exchange);
    const CompletionContext context{exchange, request, result, events};
    // Choice 0 first, the others once its decode node streams: the prompt's KV is then held by both of its nodes
    // (prefix indexes), which the placement prefers, so the others compute and move only what it does not cover.
    int running = 0;
    bool others_started = false;
    asio::steady_timer others_done(io_, asio::steady_timer::time_point::max());
    const auto start_others = [&] {
      if (std::exchange(others_started, true)) return;
      for (int i = 1; i < request.n; ++i) {
        ++running;
        const std::function<void()> no_hook;  // named: GCC 12 and temporaries passed to coroutines
        asio::co_spawn(io_, run_choice(context, i, *choices[i], no_hook), [&, i](std::exception_ptr failure) {
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
    const auto failed =
        std::find_if(choices.begin(), choices.end(), [](const auto& choice) { return !choice->outcome.is_ok(); });
    if (failed != choices.end() && !exchange.client_gone()) {
      const ApiError error = call_error((*failed)->outcome.status());
      log_event(LogLevel::kWarning, "router", "request failed",
                {{"request", result.id}, {"error", (*failed)->outcome.status().to_string()}});
      co_await fail(exchange, error, events.started());
      co_return;
    }
    if (exchange.client_gone() || failed != choices.end()) {
      count_request(exchange.request().path, kClientClosedRequest);
      co_return;
    }
    // The prompt counts once, as the first choice ran it; the completions of every choice.
    const CallOutcome& first = *choices[0]->outcome;
    result.usage.cached_tokens = std::min(first.cached_tokens, result.usage.prompt_tokens);
    result.prefill_node = first.prefill_node;
    result.decode_node = first.decode_node;
    double first_token_seconds = 0;
    for (const auto& choice : choices) {
      result.usage.completion_tokens += choice->tokens_before + choice->outcome->completion_tokens;
      const double seconds = choice->timing.first_token_seconds().value_or(0);
      if (first_token_seconds == 0 || (seconds > 0 && seconds < first_token_seconds)) first_token_seconds = seconds;
      result.choices.push_back(std::move(choice->result));
    }
    result.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - received).count();
    result.ttft_ms = first_token_seconds * 1e3;
    metrics_.completion_answered(std::chrono::duration<double>(Clock::now() - received).count(),
                                 result.usage.prompt_tokens, result.usage.completion_tokens);
    if (request.stream) {
      if (request.include_usage) {
        std::string usage = usage_chunk_json(endpoint, result);
        co_await events.send(std::move(usage));
      }
      std::string done = "[DONE]";
      co_await events.send(std::move(done));
      count_request(exchange.request().path, 200);
    } else {
      http::Response answer = json_response(200, completion_json(endpoint, result));
      co_await reply(exchange, std::move(answer));
    }
  }

  // Tokenizes and checks the request against the model; the call to run.
  std::variant<CallPlan, ApiError> plan_call(const CompletionRequest& request, Clock::time_point received) {
    if (request.model != options_.model_name) {
      return api_error(
          404, "invalid_request_error",
          "the model '" + request.model + "' does not exist; this router serves '" + options_.model_name + "'",
          "model_not_found", "model");
    }
    CallPlan plan;
    const std::string param = request.endpoint == Endpoint::kCompletions ? "prompt" : "messages";
    if (!request.prompt_token_ids.empty()) {
      for (int32_t token : request.prompt_token_ids) {
        if (token >= model_.config().vocab_size) {
          return invalid_request("token id " + std::to_string(token) + " is outside the vocabulary of " +
                                     std::to_string(model_.config().vocab_size),
                                 "prompt");
        }
      }
      plan.call.prompt = request.prompt_token_ids;
    } else {
      plan.call.prompt = tokenizer_->encode(
          request.endpoint == Endpoint::kCompletions ? request.prompt : format_chatml(request.messages));
    }
    if (plan.call.prompt.empty()) return invalid_request("the prompt is empty", param);
    const int64_t context = model_.config().max_position_embeddings;
    if (static_cast<int64_t>(plan.call.prompt.size()) + request.max_tokens > context) {
      return invalid_request("the prompt's " + std::to_string(plan.call.prompt.size()) + " tokens plus max_tokens " +
                                 std::to_string(request.max_tokens) + " exceed the model's context of " +
                                 std::to_string(context) + " tokens",
                             param, "context_length_exceeded");
    }
    // Entities: one per entity token, all ids or all vectors.
    size_t entity_tokens = 0;
    for (int32_t token : plan.call.prompt) entity_tokens += token == entities_.entity_token ? 1 : 0;
    if (request.entities.size() != entity_tokens) {
      return invalid_request("the prompt has " + std::to_string(entity_tokens) + " entity tokens but 'entities' has " +
                                 std::to_string(request.entities.size()) + " items",
                             "entities");
    }
    for (const EntityInput& entity : request.entities) {
      if (!entity.id.empty()) {
        plan.call.entity_ids.push_back(entity.id);
      } else {
        plan.call.entity_vectors.insert(plan.call.entity_vectors.end(), entity.vector.begin(), entity.vector.end());
      }
    }
    if (!plan.call.entity_ids.empty() && !plan.call.entity_vectors.empty()) {
      return invalid_request("'entities' must be all ids or all vectors in one request", "entities");
    }
    plan.call.max_new_tokens = request.max_tokens;
    plan.call.sampling.temperature = request.temperature;
    plan.call.sampling.top_p = request.top_p;
    plan.call.sampling.top_k = request.top_k;
    plan.call.sampling.repetition_penalty = request.repetition_penalty;
    plan.call.sampling.frequency_penalty = request.frequency_penalty;
    plan.call.sampling.presence_penalty = request.presence_penalty;
    plan.call.sampling.logprobs = request.logprobs;
    plan.call.sampling.top_logprobs = request.top_logprobs;
    plan.call.sampling.logit_bias = request.logit_bias;
    if (Status valid = plan.call.sampling.validate(model_.config().vocab_size); !valid.is_ok()) {
      return invalid_request(valid.message(), "logit_bias");  // the rest was checked when parsed
    }
    plan.vocab_size = model_.config().vocab_size;
    plan.call.sampling.seed = request.seed ? *request.seed : random_();
    if (!request.ignore_eos) plan.call.stop_tokens = stop_tokens_;
    plan.call.constraint.allowed = request.allowed;
    plan.call.constraint.max_items = request.max_items;
    const auto timeout = request.timeout_seconds ? std::chrono::duration_cast<std::chrono::milliseconds>(
                                                       std::chrono::duration<double>(*request.timeout_seconds))
                                                 : options_.request_timeout;
    complete_plan(plan, entities_, block_size(), received + timeout);
    return plan;
  }

  int block_size() const {
    for (const ClusterNode& entry : cluster_->nodes(Tier::kDecode)) {
      if (entry.link != nullptr && entry.link->hello().kv_layout().block_size() > 0)
        return static_cast<int>(entry.link->hello().kv_layout().block_size());
    }
    return 16;
  }

  static std::string path_label(const std::string& path) {
    return path.rfind(kWorkflowsPath, 0) == 0 ? std::string("/v1/workflows")
           : is_known_path(path)              ? path
                                              : std::string("other");
  }

  void count_request(const std::string& path, int status) { metrics_.count_request(path_label(path), status); }

  asio::io_context& io_;
  const ModelFiles& model_;
  RouterOptions options_;
  PolicyOptions policy_;
  ApiLimits limits_;
  node::EntityShape entities_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<int32_t> stop_tokens_;
  std::shared_ptr<Cluster> cluster_;
  std::unique_ptr<http::Server> server_;
  RouterMetrics metrics_;
  std::map<std::string, WorkflowDefinition> workflows_;
  std::optional<EntityStore> entity_store_;
  std::string entity_token_text_;
  WorkflowLimits workflow_limits_;
  std::mt19937_64 random_{std::random_device{}()};
  uint64_t counter_ = 0;
  uint64_t next_id_ = 1;
  int64_t started_ = unix_seconds();
  bool draining_ = false;
};

class ServiceHandle final : public RouterService {
 public:
  explicit ServiceHandle(std::shared_ptr<Service> service) : service_(std::move(service)) {}
  ~ServiceHandle() override { service_->stop(); }
  uint16_t port() const override { return service_->port(); }
  void drain(std::chrono::milliseconds within, std::function<void()> drained) override {
    service_->drain(within, std::move(drained));
  }
  void stop() override { service_->stop(); }

 private:
  std::shared_ptr<Service> service_;
};

}  // namespace

Result<std::unique_ptr<RouterService>> RouterService::start(asio::io_context& io, const ModelFiles& model,
                                                            RouterOptions options) {
  auto service = std::make_shared<Service>(io, model, std::move(options));
  RECGPT_RETURN_IF_ERROR(service->open());
  return std::unique_ptr<RouterService>(std::make_unique<ServiceHandle>(std::move(service)));
}

}  // namespace recgpt::router
