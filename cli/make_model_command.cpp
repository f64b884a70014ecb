#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "engine/model_maker.h"

namespace recgpt::cli {
namespace {

struct MakeModelFlags {
  std::string preset = "tiny";
  uint64_t seed = 0;
  std::string dtype = "f32";
  std::string out_dir;
};

}  // namespace

void add_make_model_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<MakeModelFlags>();
  CLI::App* command = app.add_subcommand("make-model", "Write a random-weight Qwen3 model folder (HF format)");
  command->add_option("--preset", flags->preset, "Model shape")->check(CLI::IsMember(model_preset_names()));
  command->add_option("--seed", flags->seed, "Seed of the random weights");
  command->add_option("--dtype", flags->dtype, "Weight type on disk")->check(CLI::IsMember({"f32", "bf16"}));
  command->add_option("--out", flags->out_dir, "Output folder")->required();
  command->callback([flags, &exit_code] {
    MakeModelOptions options{flags->preset, flags->seed, flags->dtype == "bf16" ? DType::kBF16 : DType::kF32,
                             flags->out_dir};
    Status status = make_model(options);
    if (!status.is_ok()) {
      exit_code = report_failure(status);
      return;
    }
    std::printf("wrote %s model (%s, seed %llu) to %s\n", flags->preset.c_str(), flags->dtype.c_str(),
                static_cast<unsigned long long>(flags->seed), flags->out_dir.c_str());
  });
}

}  // namespace recgpt::cli
