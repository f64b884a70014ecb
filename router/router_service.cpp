#include "router/router_service.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <span>

#include "common/http/http_server.h"
#include "common/log.h"
#include "engine/block_hash.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "engine/tokenizer.h"
#include "node/entity_inputs.h"
#include "router/call_runner.h"
#include "router/completion_runner.h"
#include "router/event_writer.h"
#include "router/openai_api.h"
#include "router/router_metrics.h"
#include "router/tokenize_api.h"
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
// vLLM's, outside /v1 as vLLM serves them; behind the API key as /v1 is.
bool is_tokenize_path(std::string_view path) { return path == "/tokenize" || path == "/detokenize"; }

bool is_known_path(std::string_view path) {
  return is_completion_path(path) || is_tokenize_path(path) || path == "/v1/models" || path == "/v1/cluster" ||
         path == "/healthz" || path == "/readyz" || path == "/metrics";
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
    if ((path.rfind("/v1/", 0) == 0 || is_tokenize_path(path)) && !options_.api_key.empty() &&
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

  // Everything but a completion or a workflow: small GET endpoints, the tokenizer's, or an error.
  http::Response answer_get(const http::Request& request) {
    const std::string& path = request.path;
    if (!is_known_path(path)) {
      return error_response(api_error(404, "invalid_request_error", "no route " + path, "not_found"));
    }
    const bool posted = is_completion_path(path) || is_tokenize_path(path);
    if (posted != (request.method == "POST") || (request.method != "GET" && request.method != "POST")) {
      return error_response(api_error(
          405, "invalid_request_error",
          request.method + " is not allowed on " + path + "; use " + (posted ? "POST" : "GET"), "method_not_allowed"));
    }
    if (is_tokenize_path(path)) {
      const TokenizeSettings settings{options_.model_name, model_.config().max_position_embeddings};
      auto answer = path == "/tokenize" ? tokenize_answer(request.body, *tokenizer_, limits_, settings)
                                        : detokenize_answer(request.body, *tokenizer_, limits_, settings);
      if (auto* error = std::get_if<ApiError>(&answer)) return error_response(*error);
      return json_response(200, std::move(std::get<std::string>(answer)));
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

    CompletionResult head;
    head.id = (endpoint == Endpoint::kCompletions ? "cmpl-" : "chatcmpl-") + std::to_string(next_id_++);
    head.created = unix_seconds();
    head.model = options_.model_name;
    head.tokens_as_ids = request.tokens_as_ids;
    head.usage.prompt_tokens = static_cast<int64_t>(plan.call.prompt.size());

    EventWriter events(exchange);
    const CompletionServices services{io_, *cluster_, policy_, counter_, metrics_, *tokenizer_};
    const CompletionRun run = co_await run_completion(services, exchange, events, request, plan, head, received);
    if (!run.status.is_ok() && !exchange.client_gone()) {
      const ApiError error = call_error(run.status);
      log_event(LogLevel::kWarning, "router", "request failed",
                {{"request", head.id}, {"error", run.status.to_string()}});
      co_await fail(exchange, error, events.started());
      co_return;
    }
    if (exchange.client_gone() || !run.status.is_ok()) {
      count_request(exchange.request().path, kClientClosedRequest);
      co_return;
    }
    const CompletionResult& result = run.result;
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

  // A 400 naming `param` for the first of `tokens` outside the model's vocabulary.
  std::optional<ApiError> outside_vocabulary(std::span<const int32_t> tokens, const std::string& param) const {
    for (int32_t token : tokens) {
      if (token >= model_.config().vocab_size) {
        return invalid_request("token id " + std::to_string(token) + " is outside the vocabulary of " +
                                   std::to_string(model_.config().vocab_size),
                               param);
      }
    }
    return std::nullopt;
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
      if (auto error = outside_vocabulary(request.prompt_token_ids, "prompt")) return *error;
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
    plan.call.sampling.min_tokens = request.min_tokens;
    if (Status valid = plan.call.sampling.validate(model_.config().vocab_size); !valid.is_ok()) {
      return invalid_request(valid.message(), "logit_bias");  // the rest was checked when parsed
    }
    plan.vocab_size = model_.config().vocab_size;
    plan.call.sampling.seed = request.seed ? *request.seed : random_();
    if (!request.ignore_eos) plan.call.stop_tokens = stop_tokens_;
    if (auto error = outside_vocabulary(request.stop_token_ids, "stop_token_ids")) return *error;
    for (int32_t token : request.stop_token_ids) {  // after the end tokens: a constraint ends at the first
      auto& stops = plan.call.stop_tokens;
      if (std::find(stops.begin(), stops.end(), token) == stops.end()) stops.push_back(token);
    }
    plan.call.constraint.allowed = request.allowed;
    plan.call.constraint.max_items = request.max_items;
    plan.call.constraint.json = request.response_format != ResponseFormat::kText;
    plan.call.constraint.json_schema = request.json_schema;
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
