#include "bench/serve_benchmark.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "bench/node_calls.h"
#include "bench/open_loop.h"
#include "bench/sse_client.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "engine/tokenizer.h"

namespace recgpt {
namespace {

namespace asio = boost::asio;
using bench::Clock;
using nlohmann::json;

constexpr auto kReadyTimeout = std::chrono::seconds(60);
constexpr auto kRequestTimeout = std::chrono::seconds(300);

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Prompts of random ordinary tokens (no special or entity token), the first `shared` of them common to all.
class PromptMaker {
 public:
  PromptMaker(const ModelFiles& model, const Tokenizer& tokenizer, const ServeBenchOptions& options)
      : random_(options.seed), token_(3, std::min(model.config().vocab_size - 1, 3000)) {
    if (model.config().entity_adaptor) excluded_.push_back(model.config().entity_adaptor->entity_token_id);
    for (const char* special : {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}) {
      if (auto id = tokenizer.token_to_id(special)) excluded_.push_back(*id);
    }
    shared_ = draw(options.shared_prefix_len);
  }

  std::vector<int32_t> make(int length) {
    std::vector<int32_t> prompt(shared_.begin(), shared_.begin() + std::min<size_t>(shared_.size(), length));
    std::vector<int32_t> tail = draw(length - static_cast<int>(prompt.size()));
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    return prompt;
  }

 private:
  std::vector<int32_t> draw(int count) {
    std::vector<int32_t> tokens;
    while (static_cast<int>(tokens.size()) < count) {
      const int32_t token = token_(random_);
      if (std::find(excluded_.begin(), excluded_.end(), token) == excluded_.end()) tokens.push_back(token);
    }
    return tokens;
  }

  std::mt19937_64 random_;
  std::uniform_int_distribution<int32_t> token_;
  std::vector<int32_t> excluded_;
  std::vector<int32_t> shared_;
};

std::string request_body(const std::string& model_name, const std::vector<int32_t>& prompt, int output_len) {
  return json{{"model", model_name},
              {"prompt", prompt},
              {"max_tokens", output_len},
              {"temperature", 0},
              {"ignore_eos", true},
              {"stream", true},
              {"stream_options", {{"include_usage", true}}}}
      .dump();
}

// Runs `work` on a fresh io_context until it is done.
template <typename Work>
void run_io(Work work) {
  asio::io_context io;
  asio::co_spawn(io, work(), asio::detached);
  io.run();
}

// A cluster the benchmark started: its node processes and the router in front of them.
struct StartedCluster {
  std::vector<std::unique_ptr<bench::NodeProcess>> processes;
  uint16_t prefill_port = 0;
  uint16_t decode_port = 0;
  uint16_t router_port = 0;
};

Result<StartedCluster> start_cluster(const ServeBenchOptions& options, const std::string& mode) {
  const std::vector<std::string> common = {"--model",        options.model_dir,
                                           "--threads",      std::to_string(options.threads),
                                           "--kv-cache-mib", std::to_string(options.kv_cache_mib)};
  auto argv = [&](std::vector<std::string> head) {
    head.insert(head.begin(), options.self_path);
    head.insert(head.end(), common.begin(), common.end());
    return head;
  };
  StartedCluster cluster;
  if (mode == "disaggregated") {
    RECGPT_ASSIGN_OR_RETURN(auto decode,
                            bench::start_node_process(argv({"decode", "--transfer-setting", "tls=" + options.tls}), 1));
    RECGPT_ASSIGN_OR_RETURN(
        auto prefill, bench::start_node_process(argv({"prefill", "--transfer-setting", "tls=" + options.tls}), 1));
    cluster.decode_port = decode->ports[0];
    cluster.prefill_port = prefill->ports[0];
    cluster.processes.push_back(std::move(decode));
    cluster.processes.push_back(std::move(prefill));
  } else if (mode == "colocated") {
    RECGPT_ASSIGN_OR_RETURN(
        auto serve,
        bench::start_node_process(argv({"serve", "--prefill-kv-cache-mib", std::to_string(options.kv_cache_mib)}), 2));
    cluster.prefill_port = serve->ports[0];
    cluster.decode_port = serve->ports[1];
    cluster.processes.push_back(std::move(serve));
  } else {
    return invalid_argument("unknown mode '" + mode + "' (disaggregated or colocated)");
  }
  RECGPT_ASSIGN_OR_RETURN(
      auto router, bench::start_node_process({options.self_path, "router", "--model", options.model_dir, "--port", "0",
                                              "--prefill", "127.0.0.1:" + std::to_string(cluster.prefill_port),
                                              "--decode", "127.0.0.1:" + std::to_string(cluster.decode_port)},
                                             1));
  cluster.router_port = router->ports[0];
  cluster.processes.push_back(std::move(router));
  return cluster;
}

Status wait_ready(const bench::HttpTarget& target) {
  const auto deadline = Clock::now() + kReadyTimeout;
  int status = 0;
  while (Clock::now() < deadline && status != 200) {
    run_io([&]() -> asio::awaitable<void> {
      status = co_await bench::http_get_status(target, "/readyz", Clock::now() + std::chrono::seconds(2));
      if (status != 200) {
        asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::use_awaitable);
      }
    });
  }
  if (status != 200) return unavailable("the router at port " + std::to_string(target.port) + " did not get ready");
  return Status::ok();
}

// The open-loop load: every request starts at its Poisson arrival time, however many are in flight.
std::vector<bench::StreamedCompletion> run_load(const ServeBenchOptions& options, const bench::HttpTarget& target,
                                                const std::string& model_name, PromptMaker& prompts) {
  const std::vector<double> arrivals = bench::poisson_arrivals(options.rate, options.duration, options.seed + 1);
  std::vector<std::string> bodies;
  for (size_t i = 0; i < arrivals.size(); ++i)
    bodies.push_back(request_body(model_name, prompts.make(options.prompt_len), options.output_len));
  const std::vector<bench::StreamedCompletion> results =
      bench::run_open_loop<bench::StreamedCompletion>(arrivals, [&](size_t i) {
        return bench::stream_completion(target, "/v1/completions", bodies[i], Clock::now() + kRequestTimeout);
      });
  return results;
}

ServeBenchFigure summarize(const ServeBenchOptions& options, const std::string& mode,
                           const std::vector<bench::StreamedCompletion>& results) {
  ServeBenchFigure figure;
  figure.mode = mode;
  figure.requests = static_cast<int>(results.size());
  std::vector<double> ttft, itl, tpot, e2e;
  Clock::time_point first = Clock::time_point::max(), last = Clock::time_point::min();
  int64_t tokens = 0;
  int good = 0;
  for (const bench::StreamedCompletion& result : results) {
    first = std::min(first, result.sent);
    last = std::max(last, result.done);
    if (!result.status.is_ok()) {
      ++figure.failed;
      if (figure.first_error.empty()) figure.first_error = result.status.to_string();
      continue;
    }
    const double first_token = seconds_between(result.sent, result.text_events.front());
    const double per_token = result.completion_tokens > 1
                                 ? seconds_between(result.text_events.front(), result.text_events.back()) /
                                       static_cast<double>(result.completion_tokens - 1)
                                 : 0;
    ttft.push_back(first_token);
    tpot.push_back(per_token);
    e2e.push_back(seconds_between(result.sent, result.done));
    for (size_t i = 1; i < result.text_events.size(); ++i)
      itl.push_back(seconds_between(result.text_events[i - 1], result.text_events[i]));
    tokens += result.completion_tokens;
    if (first_token * 1e3 <= options.slo_ttft_ms && per_token * 1e3 <= options.slo_tpot_ms) ++good;
  }
  figure.seconds = results.empty() ? 0 : seconds_between(first, last);
  figure.ttft = bench::percentiles(ttft);
  figure.itl = bench::percentiles(itl);
  figure.tpot = bench::percentiles(tpot);
  figure.e2e = bench::percentiles(e2e);
  if (figure.seconds > 0) {
    figure.request_throughput = static_cast<double>(e2e.size()) / figure.seconds;
    figure.output_tokens_per_second = static_cast<double>(tokens) / figure.seconds;
    figure.goodput = good / figure.seconds;
  }
  return figure;
}

// The router's own latency: each call straight to the node pair and through the router, one at a time, after a
// warm-up run of the same call (so both find the prompt's blocks cached alike).
Result<RouterOverhead> measure_overhead(const ServeBenchOptions& options, const ModelFiles& model,
                                        const StartedCluster& cluster, const bench::HttpTarget& target,
                                        const std::string& model_name, PromptMaker& prompts) {
  RECGPT_ASSIGN_OR_RETURN(std::string fingerprint, model_fingerprint(model));
  const ModelConfig& config = model.config();
  const int32_t entity_token = config.entity_adaptor ? config.entity_adaptor->entity_token_id : -1;
  const int entity_dim = config.entity_adaptor ? config.entity_adaptor->entity_dim : 0;
  std::vector<double> direct_e2e, router_e2e, added_e2e, added_ttft;
  Status failure;
  run_io([&]() -> asio::awaitable<void> {
    auto client =
        co_await node::AgentCallClient::connect("127.0.0.1", cluster.prefill_port, cluster.decode_port, fingerprint,
                                                entity_token, entity_dim, Clock::now() + kReadyTimeout);
    if (!client.is_ok()) {
      failure = client.status();
      co_return;
    }
    for (int i = 0; i < options.overhead_calls && failure.is_ok(); ++i) {
      node::AgentCall call;
      call.prompt = prompts.make(options.prompt_len);
      call.max_new_tokens = options.output_len;
      call.sampling.temperature = 0;
      const std::string body = request_body(model_name, call.prompt, options.output_len);
      bench::CallTimes warm = co_await bench::timed_call(**client, call);
      bench::CallTimes direct;
      bench::StreamedCompletion routed;
      for (int turn = 0; turn < 2; ++turn) {
        if ((turn + i) % 2 == 0) {
          direct = co_await bench::timed_call(**client, call);
        } else {
          routed = co_await bench::stream_completion(target, "/v1/completions", body, Clock::now() + kRequestTimeout);
        }
      }
      for (const Status& status : {warm.status, direct.status, routed.status}) {
        if (!status.is_ok() && failure.is_ok()) failure = status.with_context("router overhead call");
      }
      if (!failure.is_ok()) break;
      const double through_router = seconds_between(routed.sent, routed.done);
      direct_e2e.push_back(direct.total);
      router_e2e.push_back(through_router);
      added_e2e.push_back(through_router - direct.total);
      added_ttft.push_back(seconds_between(routed.sent, routed.text_events.front()) - direct.time_to_first_token);
    }
    (*client)->close();
  });
  RECGPT_RETURN_IF_ERROR(failure);
  RouterOverhead overhead;
  overhead.calls = static_cast<int>(added_e2e.size());
  overhead.direct_e2e_p50 = bench::percentiles(direct_e2e).p50;
  overhead.router_e2e_p50 = bench::percentiles(router_e2e).p50;
  overhead.added_e2e = bench::percentiles(added_e2e);
  overhead.added_ttft = bench::percentiles(added_ttft);
  return overhead;
}

Result<bench::HttpTarget> parse_url(const std::string& url, const std::string& api_key) {
  std::smatch match;
  if (!std::regex_match(url, match, std::regex("http://([0-9.]+):(\\d+)/?"))) {
    return invalid_argument("--url must look like http://127.0.0.1:8000 (an IPv4 address and a port), got '" + url +
                            "'");
  }
  return bench::HttpTarget{match[1], static_cast<uint16_t>(std::stoi(match[2])), api_key};
}

}  // namespace

Result<ServeBenchReport> run_serve_bench(const ServeBenchOptions& options) {
  if (!(options.rate > 0) || !(options.duration > 0) || options.prompt_len < 1 || options.output_len < 2 ||
      options.shared_prefix_len < 0 || options.shared_prefix_len > options.prompt_len) {
    return invalid_argument(
        "bench serve wants a positive rate and duration, prompt length >= 1, output length >= 2 and a shared prefix "
        "no longer than the prompt");
  }
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(options.model_dir));
  RECGPT_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::load(model->tokenizer_path()));
  if (options.prompt_len + options.output_len > model->config().max_position_embeddings) {
    return invalid_argument("prompt and output lengths exceed the model's context of " +
                            std::to_string(model->config().max_position_embeddings) + " tokens");
  }
  const std::string& model_name = options.model_name;
  ServeBenchReport report;
  report.options = options;
  const std::vector<std::string> modes = options.url.empty() ? options.modes : std::vector<std::string>{"endpoint"};
  for (const std::string& mode : modes) {
    PromptMaker prompts(*model, tokenizer, options);  // the same prompts and arrivals in every mode
    StartedCluster cluster;
    bench::HttpTarget target;
    if (options.url.empty()) {
      RECGPT_ASSIGN_OR_RETURN(cluster, start_cluster(options, mode));
      target.port = cluster.router_port;
    } else {
      RECGPT_ASSIGN_OR_RETURN(target, parse_url(options.url, options.api_key));
    }
    RECGPT_RETURN_IF_ERROR(wait_ready(target));
    // One warm-up request: the shared prefix is computed once before the clock starts, as in steady state.
    run_io([&]() -> asio::awaitable<void> {
      (void)co_await bench::stream_completion(target, "/v1/completions",
                                              request_body(model_name, prompts.make(options.prompt_len), 2),
                                              Clock::now() + kRequestTimeout);
    });
    ServeBenchFigure figure = summarize(options, mode, run_load(options, target, model_name, prompts));
    if (options.url.empty() && options.overhead_calls > 0) {
      RECGPT_ASSIGN_OR_RETURN(figure.overhead, measure_overhead(options, *model, cluster, target, model_name, prompts));
    }
    report.figures.push_back(std::move(figure));
  }
  return report;
}

std::string serve_bench_report_text(const ServeBenchReport& report) {
  const ServeBenchOptions& o = report.options;
  char line[512];
  std::snprintf(line, sizeof(line),
                "bench serve: Poisson arrivals at %.2f/s for %.0f s, prompt %d tokens (%d shared), output %d tokens, "
                "SLO TTFT <= %.0f ms and TPOT <= %.0f ms, %d thread(s) per node\n",
                o.rate, o.duration, o.prompt_len, o.shared_prefix_len, o.output_len, o.slo_ttft_ms, o.slo_tpot_ms,
                o.threads);
  std::string text = line;
  for (const ServeBenchFigure& f : report.figures) {
    auto ms = [](const bench::LatencyPercentiles& p, const char* name) {
      char out[128];
      std::snprintf(out, sizeof(out), "%s p50 %.1f p90 %.1f p99 %.1f ms", name, 1e3 * p.p50, 1e3 * p.p90, 1e3 * p.p99);
      return std::string(out);
    };
    std::snprintf(line, sizeof(line),
                  "%-13s %d requests, %d failed | %.2f req/s, %.1f output tokens/s, goodput %.2f req/s\n",
                  f.mode.c_str(), f.requests, f.failed, f.request_throughput, f.output_tokens_per_second, f.goodput);
    text += line;
    text += "              " + ms(f.ttft, "TTFT") + " | " + ms(f.tpot, "TPOT") + "\n";
    text += "              " + ms(f.itl, "ITL") + " | " + ms(f.e2e, "E2E") + "\n";
    if (!f.first_error.empty()) text += "              first error: " + f.first_error + "\n";
    if (f.overhead.calls > 0) {
      std::snprintf(line, sizeof(line),
                    "              router added latency over %d sequential calls: E2E p50 %.3f ms p90 %.3f ms, TTFT "
                    "p50 %.3f ms (direct E2E p50 %.2f ms, via router %.2f ms)\n",
                    f.overhead.calls, 1e3 * f.overhead.added_e2e.p50, 1e3 * f.overhead.added_e2e.p90,
                    1e3 * f.overhead.added_ttft.p50, 1e3 * f.overhead.direct_e2e_p50, 1e3 * f.overhead.router_e2e_p50);
      text += line;
    }
  }
  if (report.figures.size() == 2 && report.figures[1].output_tokens_per_second > 0) {
    const ServeBenchFigure& a = report.figures[0];
    const ServeBenchFigure& b = report.figures[1];
    std::snprintf(line, sizeof(line), "%s / %s: output tokens/s %.2f, TTFT p50 %.2f, TPOT p50 %.2f, goodput %.2f\n",
                  a.mode.c_str(), b.mode.c_str(), a.output_tokens_per_second / b.output_tokens_per_second,
                  a.ttft.p50 / std::max(1e-9, b.ttft.p50), a.tpot.p50 / std::max(1e-9, b.tpot.p50),
                  b.goodput > 0 ? a.goodput / b.goodput : 0.0);
    text += line;
  }
  return text;
}

std::string serve_bench_report_json(const ServeBenchReport& report) {
  const ServeBenchOptions& o = report.options;
  json out;
  out["options"] = {{"rate", o.rate},
                    {"duration_s", o.duration},
                    {"prompt_len", o.prompt_len},
                    {"shared_prefix_len", o.shared_prefix_len},
                    {"output_len", o.output_len},
                    {"slo_ttft_ms", o.slo_ttft_ms},
                    {"slo_tpot_ms", o.slo_tpot_ms},
                    {"threads", o.threads},
                    {"tls", o.tls}};
  auto latency = [](const bench::LatencyPercentiles& p) {
    return json{{"p50_s", p.p50}, {"p90_s", p.p90}, {"p99_s", p.p99}};
  };
  for (const ServeBenchFigure& f : report.figures) {
    json mode = {{"requests", f.requests},
                 {"failed", f.failed},
                 {"seconds", f.seconds},
                 {"ttft", latency(f.ttft)},
                 {"itl", latency(f.itl)},
                 {"tpot", latency(f.tpot)},
                 {"e2e", latency(f.e2e)},
                 {"request_throughput", f.request_throughput},
                 {"output_tokens_per_second", f.output_tokens_per_second},
                 {"goodput", f.goodput}};
    if (!f.first_error.empty()) mode["first_error"] = f.first_error;
    if (f.overhead.calls > 0) {
      mode["router_overhead"] = {{"calls", f.overhead.calls},
                                 {"added_e2e", latency(f.overhead.added_e2e)},
                                 {"added_ttft", latency(f.overhead.added_ttft)},
                                 {"direct_e2e_p50_s", f.overhead.direct_e2e_p50},
                                 {"router_e2e_p50_s", f.overhead.router_e2e_p50}};
    }
    out["modes"][f.mode] = mode;
  }
  return out.dump(2);
}

}  // namespace recgpt
