// `recgpt make-entity-store`: an entity store (engine/entity_store.h) with deterministic random vectors of the
// model's adaptor input size for the given ids — stand-ins for an item-embedding model's vectors, for demos,
// tests and benchmarks of hybrid contexts. Real deployments write their own with write_entity_store.
#include <CLI/CLI.hpp>
#include <fstream>
#include <random>

#include "cli/commands.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"

namespace recgpt::cli {
namespace {

struct EntityStoreFlags {
  std::string model_dir;
  std::vector<std::string> ids;
  std::string ids_file;
  uint64_t seed = 1;
  std::string out;
};

Status run_make_entity_store(const EntityStoreFlags& flags) {
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model_dir));
  if (!model->config().entity_adaptor)
    return invalid_argument("the model at " + flags.model_dir + " has no entity adaptor");
  const int dim = model->config().entity_adaptor->entity_dim;
  std::vector<std::string> ids = flags.ids;
  if (!flags.ids_file.empty()) {
    std::ifstream file(flags.ids_file);
    if (!file) return not_found("--ids-file '" + flags.ids_file + "' cannot be read");
    for (std::string line; std::getline(file, line);)
      if (!line.empty()) ids.push_back(line);
  }
  if (ids.empty()) return invalid_argument("no ids: give --ids or --ids-file");
  std::mt19937_64 random(flags.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> vectors(ids.size() * static_cast<size_t>(dim));
  for (float& value : vectors) value = normal(random);
  RECGPT_RETURN_IF_ERROR(write_entity_store(flags.out, dim, ids, vectors));
  std::printf("recgpt make-entity-store: %zu entities of dim %d in %s\n", ids.size(), dim, flags.out.c_str());
  return Status::ok();
}

}  // namespace

void add_make_entity_store_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<EntityStoreFlags>();
  CLI::App* command = app.add_subcommand(
      "make-entity-store", "Write an entity store of deterministic random vectors for the given item ids");
  command->add_option("--model", flags->model_dir, "Model folder (its adaptor's input size)")->required();
  command->add_option("--ids", flags->ids, "Entity ids")->delimiter(',');
  command->add_option("--ids-file", flags->ids_file, "A file of entity ids, one per line");
  command->add_option("--seed", flags->seed, "Seed of the vectors");
  command->add_option("--out", flags->out, "The entity store file to write")->required();
  command->callback([flags, &exit_code] {
    Status status = run_make_entity_store(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
