#include "bench/workflow_benchmark.h"

#include <signal.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "bench/open_loop.h"
#include "bench/sse_client.h"
#include "common/subprocess.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"

namespace recgpt {
namespace {

namespace asio = boost::asio;
using bench::Clock;
using nlohmann::json;

constexpr auto kStartTimeout = std::chrono::seconds(120);
constexpr auto kRequestTimeout = std::chrono::seconds(300);

const char* const kWords[] = {"trail",  "running", "shoes",  "winter", "jacket", "camping", "tent",   "coffee",
                              "travel", "journal", "merino", "wool",   "boots",  "stove",   "hiking", "summer",
                              "dress",  "garden",  "chair",  "lamp",   "desk",   "yoga",    "mat",    "bottle"};
const char* const kCategories[] = {"Sports shoes", "Outdoor apparel", "Camping gear", "Coffee", "Home", "Fitness"};
const char* const kActions[] = {"click", "cart", "buy"};

// Synthetic users: `history_len` items each; the entity store knows a share of them (by id).
struct Users {
  std::vector<json> requests;
  std::vector<std::string> known_ids;
};

Users make_users(const WorkflowBenchOptions& options, int count) {
  std::mt19937_64 random(options.seed);
  std::uniform_int_distribution<size_t> word(0, std::size(kWords) - 1);
  std::bernoulli_distribution known(options.known_fraction);
  Users users;
  for (int u = 0; u < count; ++u) {
    json history = json::array();
    for (int k = 0; k < options.history_len; ++k) {
      std::string title;
      for (int w = 0; w < 6; ++w) title += std::string(w ? " " : "") + kWords[word(random)];
      const std::string id = "item-" + std::to_string(u) + "-" + std::to_string(k);
      if (known(random)) users.known_ids.push_back(id);
      history.push_back({{"item_id", id},
                         {"title", title},
                         {"category", kCategories[k % std::size(kCategories)]},
                         {"action", kActions[k % std::size(kActions)]},
                         {"timestamp", "2026-11-" + std::to_string(10 + k % 20)}});
    }
    users.requests.push_back({{"user", {{"id", "user-" + std::to_string(u)}, {"profile", {{"age", 20 + u % 40}}}}},
                              {"history", history},
                              {"queries", {kWords[word(random)], kWords[word(random)]}},
                              {"environment", {{"season", "winter"}, {"weather", "snow"}}},
                              {"options", {{"experts", options.experts}, {"seed", u}}}});
  }
  return users;
}

// A `recgpt up` cluster, stopped with SIGINT.
struct Cluster {
  Subprocess process;
  uint16_t port = 0;
  ~Cluster() {
    process.kill(SIGINT);
    (void)process.wait(Clock::now() + std::chrono::seconds(40));
  }
};

Result<std::unique_ptr<Cluster>> start_cluster(const WorkflowBenchOptions& options, const std::string& store) {
  auto cluster = std::make_unique<Cluster>();
  RECGPT_ASSIGN_OR_RETURN(
      cluster->process,
      Subprocess::spawn({options.self_path, "up", "--model", options.model_dir, "--port", "0", "--prefill",
                         std::to_string(options.prefill), "--decode", std::to_string(options.decode), "--kv-cache-mib",
                         std::to_string(options.kv_cache_mib), "--entity-store", store}));
  const auto deadline = Clock::now() + kStartTimeout;
  for (;;) {
    RECGPT_ASSIGN_OR_RETURN(std::string line, cluster->process.read_line(deadline));
    std::smatch match;
    if (std::regex_search(line, match, std::regex("serving http://[0-9.]+:(\\d+)/v1"))) {
      cluster->port = static_cast<uint16_t>(std::stoi(match[1]));
      return cluster;
    }
  }
}

WorkflowBenchFigure run_mode(const WorkflowBenchOptions& options, const std::string& mode, const Users& users,
                             uint16_t port) {
  const std::vector<double> arrivals = bench::poisson_arrivals(options.rate, options.duration, options.seed + 1);
  std::vector<std::string> bodies;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    json request = users.requests[i % users.requests.size()];
    if (mode == "v1") request["options"]["v1"] = true;
    if (mode == "no_affinity") request["options"]["affinity"] = false;
    bodies.push_back(request.dump());
  }
  const bench::HttpTarget target{"127.0.0.1", port, ""};
  const std::vector<bench::HttpReply> replies = bench::run_open_loop<bench::HttpReply>(arrivals, [&](size_t i) {
    return bench::post_json(target, "/v1/workflows/intent", bodies[i], Clock::now() + kRequestTimeout);
  });

  WorkflowBenchFigure figure;
  figure.mode = mode;
  figure.workflows = static_cast<int>(replies.size());
  std::vector<double> e2e;
  std::map<std::string, std::vector<double>> stages;
  Clock::time_point first = Clock::time_point::max(), last = Clock::time_point::min();
  int good = 0;
  for (const bench::HttpReply& reply : replies) {
    first = std::min(first, reply.sent);
    last = std::max(last, reply.done);
    const json body = json::parse(reply.body, nullptr, false);
    if (reply.status != 200 || body.is_discarded()) {
      ++figure.failed;
      if (figure.first_error.empty())
        figure.first_error = "HTTP " + std::to_string(reply.status) + ": " + reply.body.substr(0, 200);
      continue;
    }
    const double seconds = std::chrono::duration<double>(reply.done - reply.sent).count();
    e2e.push_back(seconds);
    if (seconds * 1e3 <= options.slo_ms) ++good;
    for (auto it = body["timings"]["steps"].begin(); it != body["timings"]["steps"].end(); ++it)
      stages[it.key()].push_back(it.value().get<double>() / 1e3);
    figure.computed_prompt_tokens += body["usage"]["computed_prompt_tokens"].get<double>();
    figure.prompt_tokens += body["usage"]["prompt_tokens"].get<double>();
    figure.compression_ratio += body["usage"]["context"]["compression_ratio"].get<double>();
  }
  const double done = static_cast<double>(e2e.size());
  if (done > 0) {
    figure.computed_prompt_tokens /= done;
    figure.prompt_tokens /= done;
    figure.compression_ratio /= done;
  }
  figure.seconds = replies.empty() ? 0 : std::chrono::duration<double>(last - first).count();
  figure.e2e = bench::percentiles(e2e);
  for (auto& [name, values] : stages) figure.stages[name] = bench::percentiles(values);
  if (figure.seconds > 0) {
    figure.workflows_per_second = done / figure.seconds;
    figure.goodput = good / figure.seconds;
  }
  return figure;
}

}  // namespace

Result<WorkflowBenchReport> run_workflow_bench(const WorkflowBenchOptions& options) {
  if (!(options.rate > 0) || !(options.duration > 0) || options.history_len < 1 || options.experts < 1 ||
      options.experts > 8 || options.known_fraction < 0 || options.known_fraction > 1) {
    return invalid_argument(
        "bench workflows wants a positive rate and duration, history length >= 1, 1 to 8 experts and a known "
        "fraction in [0, 1]");
  }
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(options.model_dir));
  if (!model->config().entity_adaptor) return invalid_argument("the model has no entity adaptor");
  const int users_count = std::max(1, static_cast<int>(options.rate * options.duration * 2));
  const Users users = make_users(options, users_count);
  // The entity store: the known items, vectors of the adaptor's input size.
  const int dim = model->config().entity_adaptor->entity_dim;
  const std::string store =
      (std::filesystem::temp_directory_path() / ("recgpt_bench_workflows_" + std::to_string(::getpid()) + ".bin"))
          .string();
  std::mt19937_64 random(options.seed);
  std::normal_distribution<float> normal;
  std::vector<float> vectors(users.known_ids.size() * static_cast<size_t>(dim));
  for (float& value : vectors) value = normal(random);
  RECGPT_RETURN_IF_ERROR(write_entity_store(store, dim, users.known_ids, vectors));
  WorkflowBenchReport report;
  report.options = options;
  Status failure;
  for (const std::string& mode : options.modes) {
    if (mode != "hybrid" && mode != "no_affinity" && mode != "v1") {
      failure = invalid_argument("unknown mode '" + mode + "' (hybrid, no_affinity, v1)");
      break;
    }
    auto cluster = start_cluster(options, store);
    if (!cluster.is_ok()) {
      failure = cluster.status().with_context("starting recgpt up");
      break;
    }
    report.figures.push_back(run_mode(options, mode, users, (*cluster)->port));
  }
  std::filesystem::remove(store);
  RECGPT_RETURN_IF_ERROR(failure);
  return report;
}

std::string workflow_bench_report_text(const WorkflowBenchReport& report) {
  const WorkflowBenchOptions& o = report.options;
  char line[512];
  std::snprintf(line, sizeof(line),
                "bench workflows: intent, Poisson arrivals at %.2f/s for %.0f s, %d-item histories (%.0f%% known to "
                "the entity store), %d experts, %d prefill + %d decode, SLO %.0f ms end to end\n",
                o.rate, o.duration, o.history_len, 100 * o.known_fraction, o.experts, o.prefill, o.decode, o.slo_ms);
  std::string text = line;
  for (const WorkflowBenchFigure& f : report.figures) {
    std::snprintf(line, sizeof(line),
                  "%-12s %d workflows, %d failed | %.2f workflows/s, goodput %.2f/s | E2E p50 %.1f p90 %.1f p99 %.1f "
                  "ms | prompt tokens computed %.0f of %.0f per workflow, compression %.2fx\n",
                  f.mode.c_str(), f.workflows, f.failed, f.workflows_per_second, f.goodput, 1e3 * f.e2e.p50,
                  1e3 * f.e2e.p90, 1e3 * f.e2e.p99, f.computed_prompt_tokens, f.prompt_tokens, f.compression_ratio);
    text += line;
    for (const auto& [stage, p] : f.stages) {
      std::snprintf(line, sizeof(line), "             %-10s p50 %.1f p90 %.1f p99 %.1f ms\n", stage.c_str(),
                    1e3 * p.p50, 1e3 * p.p90, 1e3 * p.p99);
      text += line;
    }
    if (!f.first_error.empty()) text += "             first error: " + f.first_error + "\n";
  }
  return text;
}

std::string workflow_bench_report_json(const WorkflowBenchReport& report) {
  const WorkflowBenchOptions& o = report.options;
  json out;
  out["options"] = {{"rate", o.rate},
                    {"duration_s", o.duration},
                    {"history_len", o.history_len},
                    {"known_fraction", o.known_fraction},
                    {"experts", o.experts},
                    {"slo_ms", o.slo_ms},
                    {"prefill", o.prefill},
                    {"decode", o.decode}};
  auto latency = [](const bench::LatencyPercentiles& p) {
    return json{{"p50_s", p.p50}, {"p90_s", p.p90}, {"p99_s", p.p99}};
  };
  for (const WorkflowBenchFigure& f : report.figures) {
    json stages = json::object();
    for (const auto& [stage, p] : f.stages) stages[stage] = latency(p);
    json mode = {{"workflows", f.workflows},
                 {"failed", f.failed},
                 {"seconds", f.seconds},
                 {"e2e", latency(f.e2e)},
                 {"stages", stages},
                 {"workflows_per_second", f.workflows_per_second},
                 {"goodput", f.goodput},
                 {"computed_prompt_tokens", f.computed_prompt_tokens},
                 {"prompt_tokens", f.prompt_tokens},
                 {"compression_ratio", f.compression_ratio}};
    if (!f.first_error.empty()) mode["first_error"] = f.first_error;
    out["modes"][f.mode] = mode;
  }
  return out.dump(2);
}

}  // namespace recgpt
