#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "common/crash_report.h"

namespace recgpt::cli {

int report_failure(const Status& status) {
  std::fprintf(stderr, "recgpt: error: %s\n", status.to_string().c_str());
  return status_code_exit_code(status.code());
}

}  // namespace recgpt::cli

int main(int argc, char** argv) {
  recgpt::install_crash_report("recgpt");
  CLI::App app{"recgpt: disaggregated prefill/decode serving of RecGPT models"};
  app.require_subcommand(1);
  int exit_code = 0;
  recgpt::cli::add_generate_command(app, exit_code);
  recgpt::cli::add_logits_command(app, exit_code);
  recgpt::cli::add_tokenize_command(app, exit_code);
  recgpt::cli::add_make_model_command(app, exit_code);
  recgpt::cli::add_realign_model_command(app, exit_code);
  recgpt::cli::add_make_entity_store_command(app, exit_code);
  recgpt::cli::add_bench_command(app, exit_code);
  recgpt::cli::add_decode_command(app, exit_code);
  recgpt::cli::add_router_command(app, exit_code);
  recgpt::cli::add_up_command(app, exit_code);
  recgpt::cli::add_prefill_command(app, exit_code);
  recgpt::cli::add_serve_command(app, exit_code);
  recgpt::cli::add_plan_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
