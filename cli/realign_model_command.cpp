#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "engine/model_realign.h"

namespace recgpt::cli {

void add_realign_model_command(CLI::App& app, int& exit_code) {
  auto model_dir = std::make_shared<std::string>();
  auto out_dir = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand(
      "realign-model", "Copy a model folder with its weights on cache lines (for checkpoints from Hugging Face)");
  command->add_option("--model", *model_dir, "Model folder")->required();
  command->add_option("--out", *out_dir, "Output folder (must not exist)")->required();
  command->callback([model_dir, out_dir, &exit_code] {
    Status status = realign_model_files(*model_dir, *out_dir);
    if (!status.is_ok()) {
      exit_code = report_failure(status);
      return;
    }
    std::printf("wrote %s with its weights realigned to %s\n", model_dir->c_str(), out_dir->c_str());
  });
}

}  // namespace recgpt::cli
