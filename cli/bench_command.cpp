#include <CLI/CLI.hpp>
#include <cstdio>

#include "bench/engine_benchmark.h"
#include "cli/commands.h"

namespace recgpt::cli {

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
  engine->add_option("--batch-sizes", options->decode_batch_sizes, "Decode batch sizes")->delimiter(',');
  engine->add_option("--decode-steps", options->decode_steps, "Timed decode steps")->check(CLI::PositiveNumber);
  engine
      ->add_option("--repetitions", options->repetitions,
                   "Rounds of runs (a prefill, then each batch size, in turns); each figure keeps its best")
      ->check(CLI::PositiveNumber);
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
}

}  // namespace recgpt::cli
