#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "bench/engine_benchmark.h"
#include "bench/nodes_benchmark.h"
#include "bench/serve_benchmark.h"
#include "bench/transfer_benchmark.h"
#include "bench/workflow_benchmark.h"
#include "cli/commands.h"
#include "cli/model_flags.h"

namespace recgpt::cli {

namespace {

std::string this_binary() {
  char path[4096];
  ssize_t length = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  return length > 0 ? std::string(path, static_cast<size_t>(length)) : std::string("recgpt");
}

void add_transfer_command(CLI::App& bench_app, int& exit_code) {
  auto options = std::make_shared<TransferBenchOptions>();
  auto json = std::make_shared<bool>(false);
  auto serve = std::make_shared<bool>(false);
  CLI::App* transfer = bench_app.add_subcommand(
      "transfer", "KV block writes between two processes (bench/transfer_bench.py adds ucx_perftest)");
  transfer->add_option("--backend", options->backend, "Transfer backend");
  transfer->add_option("--tls", options->tls, "UCX transports (UCX_TLS), e.g. tcp or sm");
  transfer->add_option("--block-bytes", options->block_bytes, "Block sizes")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  transfer->add_option("--bytes-per-run", options->bytes_per_run, "Bytes written per timed run")
      ->check(CLI::Range(int64_t{1} << 20, int64_t{16} << 30));
  transfer->add_option("--blocks-per-run", options->blocks_per_run, "Adjacent blocks per run of the block mapping")
      ->check(CLI::Range(1, 1 << 20));
  transfer->add_option("--repetitions", options->repetitions, "Timed runs per figure (best kept)")
      ->check(CLI::PositiveNumber);
  transfer->add_option("--writer-cpu", options->writer_cpu, "Pin this process to a CPU (-1: no pinning)");
  transfer->add_option("--peer-cpu", options->peer_cpu, "Pin the peer process to a CPU (-1: no pinning)");
  transfer->add_flag("--json", *json, "Print the figures as JSON");
  transfer->add_flag("--serve", *serve, "Run as the receiving peer (started by the benchmark itself)")->group("");
  transfer->callback([options, json, serve, &exit_code] {
    if (*serve) {
      exit_code = serve_transfer_bench_peer(*options);
      return;
    }
    options->self_path = this_binary();
    auto report = run_transfer_bench(*options);
    if (!report.is_ok()) {
      exit_code = report_failure(report.status());
      return;
    }
    std::string text = *json ? transfer_bench_report_json(*report) + "\n" : transfer_bench_report_text(*report);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

void add_nodes_command(CLI::App& bench_app, int& exit_code) {
  auto options = std::make_shared<NodesBenchOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* nodes = bench_app.add_subcommand(
      "nodes", "Prefill and decode nodes under load: disaggregated (two processes, ucx) against colocated (serve)");
  nodes->add_option("--model", options->model_dir, "Model folder")->required();
  nodes->add_option("--tls", options->tls, "UCX transports between the two nodes (tcp, posix,cma,self)");
  nodes->add_option("--concurrency", options->concurrency, "Calls in flight at once")->check(CLI::Range(1, 4096));
  nodes->add_option("--calls", options->calls, "Calls per mode")->check(CLI::Range(1, 1 << 20));
  nodes->add_option("--prompt-tokens", options->prompt_tokens, "Prompt tokens per call")->check(CLI::Range(2, 1 << 20));
  nodes->add_option("--shared-tokens", options->shared_tokens, "Leading prompt tokens every call shares")
      ->check(CLI::Range(0, 1 << 20));
  nodes->add_option("--max-new-tokens", options->max_new_tokens, "Tokens generated per call")
      ->check(CLI::Range(2, 1 << 16));
  nodes->add_option("--kv-cache-mib", options->kv_cache_mib, "Each node's KV pool in MiB")
      ->check(CLI::Range(1, 1 << 20));
  nodes->add_option("--threads", options->threads, "Compute threads per node")->check(CLI::Range(0, 1024));
  nodes->add_flag("--json", *json, "Print the figures as JSON");
  nodes->callback([options, json, &exit_code] {
    options->self_path = this_binary();
    auto report = run_nodes_bench(*options);
    if (!report.is_ok()) {
      exit_code = report_failure(report.status());
      return;
    }
    std::string text = *json ? nodes_bench_report_json(*report) + "\n" : nodes_bench_report_text(*report);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

void add_serve_bench_command(CLI::App& bench_app, int& exit_code) {
  auto options = std::make_shared<ServeBenchOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* serve = bench_app.add_subcommand(
      "serve",
      "Open-loop Poisson load over HTTP against the router: disaggregated and colocated clusters it starts, "
      "or --url; with the router's own added latency");
  serve->add_option("--model", options->model_dir, "Model folder (the vocabulary, and what the clusters serve)")
      ->required();
  serve->add_option("--url", options->url, "An existing router (http://host:port) instead of starting clusters");
  serve->add_option("--api-key", options->api_key, "Bearer token for --url");
  serve->add_option("--model-name", options->model_name, "The model name requests carry");
  serve->add_option("--modes", options->modes, "Clusters to start: disaggregated, colocated")->delimiter(',');
  serve->add_option("--rate", options->rate, "Requests per second (Poisson arrivals)")->check(CLI::Range(1e-3, 1e5));
  serve->add_option("--duration", options->duration, "Seconds of arrivals")->check(CLI::Range(0.1, 86400.0));
  serve->add_option("--prompt-len", options->prompt_len, "Prompt tokens per request")->check(CLI::Range(1, 1 << 20));
  serve->add_option("--shared-prefix-len", options->shared_prefix_len, "Leading prompt tokens every request shares")
      ->check(CLI::Range(0, 1 << 20));
  serve->add_option("--output-len", options->output_len, "Tokens generated per request")->check(CLI::Range(2, 1 << 20));
  serve->add_option("--slo-ttft-ms", options->slo_ttft_ms, "Goodput SLO: time to first token")
      ->check(CLI::PositiveNumber);
  serve->add_option("--slo-tpot-ms", options->slo_tpot_ms, "Goodput SLO: time per output token")
      ->check(CLI::PositiveNumber);
  serve->add_option("--overhead-calls", options->overhead_calls, "Sequential calls measuring the router's latency")
      ->check(CLI::Range(0, 100000));
  serve->add_option("--tls", options->tls, "UCX transports between prefill and decode (tcp, posix,cma,self)");
  serve->add_option("--kv-cache-mib", options->kv_cache_mib, "Each node's KV pool in MiB")
      ->check(CLI::Range(1, 1 << 20));
  serve->add_option("--threads", options->threads, "Compute threads per node process")->check(CLI::Range(0, 1024));
  serve->add_option("--seed", options->seed, "Seed of the arrivals and prompts");
  serve->add_flag("--json", *json, "Print the figures as JSON");
  serve->callback([options, json, &exit_code] {
    options->self_path = this_binary();
    auto report = run_serve_bench(*options);
    if (!report.is_ok()) {
      exit_code = report_failure(report.status());
      return;
    }
    std::string text = *json ? serve_bench_report_json(*report) + "\n" : serve_bench_report_text(*report);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

void add_workflows_bench_command(CLI::App& bench_app, int& exit_code) {
  auto options = std::make_shared<WorkflowBenchOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* workflows = bench_app.add_subcommand(
      "workflows", "The intent workflow under open-loop load: hybrid, without affinity, and the v1 baseline");
  workflows->add_option("--model", options->model_dir, "Model folder (with an entity adaptor)")->required();
  workflows->add_option("--modes", options->modes, "hybrid, no_affinity, v1")->delimiter(',');
  workflows->add_option("--rate", options->rate, "Workflows per second (Poisson arrivals)")
      ->check(CLI::Range(1e-3, 1e4));
  workflows->add_option("--duration", options->duration, "Seconds of arrivals")->check(CLI::Range(0.1, 86400.0));
  workflows->add_option("--history-len", options->history_len, "History items per user")->check(CLI::Range(1, 2000));
  workflows->add_option("--known-fraction", options->known_fraction, "Share of items the entity store knows")
      ->check(CLI::Range(0.0, 1.0));
  workflows->add_option("--experts", options->experts, "Experts per workflow")->check(CLI::Range(1, 8));
  workflows->add_option("--slo-ms", options->slo_ms, "End-to-end SLO for goodput")->check(CLI::PositiveNumber);
  workflows->add_option("--prefill", options->prefill, "Prefill nodes")->check(CLI::Range(1, 16));
  workflows->add_option("--decode", options->decode, "Decode nodes")->check(CLI::Range(1, 16));
  workflows->add_option("--kv-cache-mib", options->kv_cache_mib, "Each node's KV pool")->check(CLI::Range(1, 1 << 20));
  workflows->add_option("--seed", options->seed, "Seed of users and arrivals");
  workflows->add_flag("--json", *json, "Print the figures as JSON");
  workflows->callback([options, json, &exit_code] {
    options->self_path = this_binary();
    auto report = run_workflow_bench(*options);
    if (!report.is_ok()) {
      exit_code = report_failure(report.status());
      return;
    }
    std::string text = *json ? workflow_bench_report_json(*report) + "\n" : workflow_bench_report_text(*report);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks, reported as fractions of limits measured in the same run");
  bench->require_subcommand(1);
  auto options = std::make_shared<EngineBenchOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* engine = bench->add_subcommand("engine", "Prefill and decode speed of one model");
  engine->add_option("--model", options->model_dir, "Model folder")->required();
  engine->add_option("--threads", options->threads, "Compute threads (0 = all cores)");
  engine->add_option("--prefill-tokens", options->prefill_tokens, "Prompt length of the prefill run")
      ->check(CLI::PositiveNumber);
  engine->add_option("--batch-sizes", options->decode_batch_sizes, "Decode batch sizes")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  engine->add_option("--decode-steps", options->decode_steps, "Timed decode steps per round")
      ->check(CLI::PositiveNumber);
  engine
      ->add_option("--decode-context", options->decode_context_tokens,
                   "Prompt tokens of each decoding sequence before the timed steps (RecGPT's user contexts: 1-2K)")
      ->check(CLI::Range(1, 32768));
  engine
      ->add_option("--repetitions", options->repetitions,
                   "Rounds of runs (a prefill, then each batch size, in turns); prefill keeps its best, decode pools "
                   "its steps (medians)")
      ->check(CLI::PositiveNumber);
  engine->add_flag_callback(
      "--weights-in-place", [options] { options->repack_weights = false; }, kWeightsInPlaceHelp);
  engine->add_flag("--json", *json, "Print the figures as JSON");
  engine->callback([options, json, &exit_code] {
    auto report = run_engine_bench(*options);
    if (!report.is_ok()) {
      exit_code = report_failure(report.status());
      return;
    }
    std::string text = *json ? engine_bench_report_json(*report) + "\n" : engine_bench_report_text(*report);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
  add_transfer_command(*bench, exit_code);
  add_nodes_command(*bench, exit_code);
  add_serve_bench_command(*bench, exit_code);
  add_workflows_bench_command(*bench, exit_code);
}

}  // namespace recgpt::cli
