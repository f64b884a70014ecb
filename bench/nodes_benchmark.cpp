#include "bench/nodes_benchmark.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "bench/latency.h"
#include "bench/node_calls.h"
#include "common/subprocess.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "node/agent_call_client.h"

namespace recgpt {
namespace {

namespace asio = boost::asio;
using bench::CallTimes;
using bench::percentiles;
using bench::timed_call;
using Clock = std::chrono::steady_clock;
constexpr auto kStartTimeout = std::chrono::seconds(60);

Result<std::unique_ptr<bench::NodeProcess>> start_node(const NodesBenchOptions& options,
                                                       std::vector<std::string> role_args, int port_lines) {
  std::vector<std::string> argv = {options.self_path};
  argv.insert(argv.end(), role_args.begin(), role_args.end());
  for (const std::string& flag :
       std::vector<std::string>{"--model", options.model_dir, "--threads", std::to_string(options.threads)}) {
    argv.push_back(flag);
  }
  return bench::start_node_process(argv, port_lines);
}

// The calls of one run: every call shares the first `shared_tokens` (one user context, as a workflow's agents
// do), then has a tail of its own. Deterministic.
std::vector<node::AgentCall> make_calls(const NodesBenchOptions& options, const ModelConfig& config) {
  std::mt19937 random(7);
  std::uniform_int_distribution<int32_t> token(3, std::min(config.vocab_size - 2, 3000));
  std::vector<int32_t> context(static_cast<size_t>(options.shared_tokens));
  for (int32_t& value : context) value = token(random);
  std::vector<node::AgentCall> calls(static_cast<size_t>(options.calls));
  for (node::AgentCall& call : calls) {
    call.prompt = context;
    while (static_cast<int>(call.prompt.size()) < options.prompt_tokens) call.prompt.push_back(token(random));
    call.max_new_tokens = options.max_new_tokens;
  }
  return calls;
}

// Runs every call against the pair at (prefill_port, decode_port), `concurrency` at a time.
Result<NodesBenchFigure> load(const NodesBenchOptions& options, const ModelFiles& model, const std::string& fingerprint,
                              const std::string& mode, uint16_t prefill_port, uint16_t decode_port) {
  const std::vector<node::AgentCall> calls = make_calls(options, model.config());
  const int32_t entity_token = model.config().entity_adaptor ? model.config().entity_adaptor->entity_token_id : -1;
  const int entity_dim = model.config().entity_adaptor ? model.config().entity_adaptor->entity_dim : 0;
  asio::io_context io;
  std::vector<CallTimes> results;
  Status failure;
  double seconds = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto client = co_await node::AgentCallClient::connect("127.0.0.1", prefill_port, decode_port, fingerprint,
                                                              entity_token, entity_dim, Clock::now() + kStartTimeout);
        if (!client.is_ok()) {
          failure = client.status();
          co_return;
        }
        // Warm-up: one call computes the shared context on both nodes (steady state of a workflow).
        CallTimes warm = co_await timed_call(**client, calls.front());
        if (!warm.status.is_ok()) {
          failure = warm.status.with_context("the warm-up call");
          co_return;
        }
        const auto start = Clock::now();
        size_t next = 0;
        int running = 0;
        auto executor = co_await asio::this_coro::executor;
        asio::steady_timer all_done(executor, Clock::time_point::max());
        std::function<void()> launch = [&] {
          while (running < options.concurrency && next < calls.size()) {
            const node::AgentCall& call = calls[next++];
            ++running;
            asio::co_spawn(executor, timed_call(**client, call), [&](std::exception_ptr, CallTimes times) {
              results.push_back(std::move(times));
              --running;
              launch();
              if (running == 0) all_done.cancel();
            });
          }
        };
        launch();
        boost::system::error_code ignored;
        co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        seconds = std::chrono::duration<double>(Clock::now() - start).count();
        (*client)->close();
      },
      asio::detached);
  io.run();
  RECGPT_RETURN_IF_ERROR(failure);
  NodesBenchFigure figure;
  figure.mode = mode;
  std::vector<double> first, gaps;
  for (const CallTimes& times : results) {
    RECGPT_RETURN_IF_ERROR(times.status.with_context(mode + " call"));
    first.push_back(times.time_to_first_token);
    gaps.insert(gaps.end(), times.inter_token.begin(), times.inter_token.end());
    figure.generated_tokens += times.tokens;
  }
  figure.time_to_first_token = percentiles(first);
  figure.inter_token_latency = percentiles(gaps);
  figure.seconds = seconds;
  figure.generated_tokens_per_second = seconds > 0 ? static_cast<double>(figure.generated_tokens) / seconds : 0;
  return figure;
}

std::vector<std::string> node_flags(const NodesBenchOptions& options) {
  return {"--kv-cache-mib", std::to_string(options.kv_cache_mib)};
}

}  // namespace

Result<NodesBenchReport> run_nodes_bench(const NodesBenchOptions& options) {
  if (options.concurrency < 1 || options.calls < 1 || options.prompt_tokens < 2 ||
      options.shared_tokens >= options.prompt_tokens || options.max_new_tokens < 2) {
    return invalid_argument(
        "bench nodes wants concurrency, calls >= 1, a prompt longer than its shared part, and "
        "max new tokens >= 2");
  }
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(options.model_dir));
  RECGPT_ASSIGN_OR_RETURN(std::string fingerprint, model_fingerprint(*model));
  NodesBenchReport report;
  report.options = options;
  {
    std::vector<std::string> decode_args = {"decode", "--transfer-setting", "tls=" + options.tls};
    std::vector<std::string> prefill_args = {"prefill", "--transfer-setting", "tls=" + options.tls};
    for (const std::string& flag : node_flags(options)) {
      decode_args.push_back(flag);
      prefill_args.push_back(flag);
    }
    RECGPT_ASSIGN_OR_RETURN(auto decode, start_node(options, decode_args, 1));
    RECGPT_ASSIGN_OR_RETURN(auto prefill, start_node(options, prefill_args, 1));
    RECGPT_ASSIGN_OR_RETURN(NodesBenchFigure figure,
                            load(options, *model, fingerprint, "disaggregated", prefill->ports[0], decode->ports[0]));
    report.figures.push_back(figure);
  }
  {
    std::vector<std::string> serve_args = {"serve", "--prefill-kv-cache-mib", std::to_string(options.kv_cache_mib)};
    for (const std::string& flag : node_flags(options)) serve_args.push_back(flag);
    RECGPT_ASSIGN_OR_RETURN(auto colocated, start_node(options, serve_args, 2));
    RECGPT_ASSIGN_OR_RETURN(NodesBenchFigure figure,
                            load(options, *model, fingerprint, "colocated", colocated->ports[0], colocated->ports[1]));
    report.figures.push_back(figure);
  }
  return report;
}

std::string nodes_bench_report_text(const NodesBenchReport& report) {
  const NodesBenchOptions& o = report.options;
  std::string text = "bench nodes: " + std::to_string(o.calls) + " calls, " + std::to_string(o.concurrency) +
                     " at once, prompt " + std::to_string(o.prompt_tokens) + " tokens (" +
                     std::to_string(o.shared_tokens) + " shared), " + std::to_string(o.max_new_tokens) +
                     " new tokens, ucx tls " + o.tls + ", " + std::to_string(o.threads) + " thread(s) per node\n";
  char line[256];
  for (const NodesBenchFigure& figure : report.figures) {
    std::snprintf(line, sizeof(line),
                  "%-13s TTFT p50 %7.1f ms p90 %7.1f ms p99 %7.1f ms | ITL p50 %6.2f ms p90 %6.2f ms p99 %6.2f ms | "
                  "%7.1f tokens/s\n",
                  figure.mode.c_str(), 1e3 * figure.time_to_first_token.p50, 1e3 * figure.time_to_first_token.p90,
                  1e3 * figure.time_to_first_token.p99, 1e3 * figure.inter_token_latency.p50,
                  1e3 * figure.inter_token_latency.p90, 1e3 * figure.inter_token_latency.p99,
                  figure.generated_tokens_per_second);
    text += line;
  }
  if (report.figures.size() == 2 && report.figures[1].generated_tokens_per_second > 0) {
    std::snprintf(
        line, sizeof(line), "disaggregated / colocated: tokens/s %.2f, TTFT p50 %.2f\n",
        report.figures[0].generated_tokens_per_second / report.figures[1].generated_tokens_per_second,
        report.figures[0].time_to_first_token.p50 / std::max(1e-9, report.figures[1].time_to_first_token.p50));
    text += line;
  }
  return text;
}

std::string nodes_bench_report_json(const NodesBenchReport& report) {
  nlohmann::json json;
  const NodesBenchOptions& o = report.options;
  json["options"] = {{"calls", o.calls},
                     {"concurrency", o.concurrency},
                     {"prompt_tokens", o.prompt_tokens},
                     {"shared_tokens", o.shared_tokens},
                     {"max_new_tokens", o.max_new_tokens},
                     {"tls", o.tls},
                     {"threads", o.threads}};
  for (const NodesBenchFigure& figure : report.figures) {
    auto latency = [](const bench::LatencyPercentiles& p) {
      return nlohmann::json{{"p50_s", p.p50}, {"p90_s", p.p90}, {"p99_s", p.p99}};
    };
    json["modes"][figure.mode] = {{"time_to_first_token", latency(figure.time_to_first_token)},
                                  {"inter_token_latency", latency(figure.inter_token_latency)},
                                  {"generated_tokens_per_second", figure.generated_tokens_per_second},
                                  {"generated_tokens", figure.generated_tokens},
                                  {"seconds", figure.seconds}};
  }
  return json.dump(2);
}

}  // namespace recgpt
