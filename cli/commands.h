// Subcommands of the `recgpt` binary. Each is thin: it parses its flags and calls its component's library.
// An add_*_command registers one subcommand on `app`; when it runs, its callback stores the process exit code
// in `exit_code` (0 on success, status_code_exit_code() of the failure otherwise).
#pragma once

#include "common/status.h"

namespace CLI {
class App;
}

namespace recgpt::cli {

void add_generate_command(CLI::App& app, int& exit_code);
void add_logits_command(CLI::App& app, int& exit_code);
void add_tokenize_command(CLI::App& app, int& exit_code);
void add_make_model_command(CLI::App& app, int& exit_code);
void add_realign_model_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_decode_command(CLI::App& app, int& exit_code);
void add_prefill_command(CLI::App& app, int& exit_code);
void add_serve_command(CLI::App& app, int& exit_code);
void add_router_command(CLI::App& app, int& exit_code);
void add_up_command(CLI::App& app, int& exit_code);
void add_make_entity_store_command(CLI::App& app, int& exit_code);
void add_plan_command(CLI::App& app, int& exit_code);

// Prints "recgpt: error: <code name>: <message>" to stderr and returns the exit code for `status`.
int report_failure(const Status& status);

}  // namespace recgpt::cli
