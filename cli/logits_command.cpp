#include <CLI/CLI.hpp>
#include <charconv>

#include "cli/commands.h"
#include "cli/model_flags.h"
#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine/npy.h"

namespace recgpt::cli {
namespace {

struct LogitsFlags {
  ModelFlags model;
  std::string tokens;
  std::string entity_vectors_path;
  std::string out_path;
};

Result<std::vector<int32_t>> parse_token_list(std::string_view text) {
  std::vector<int32_t> tokens;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    int32_t value = 0;
    auto [end, error] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (error != std::errc() || end != item.data() + item.size() || item.empty()) {
      return invalid_argument("--tokens: '" + std::string(item) + "' is not a token id (expected e.g. 1,2,3)");
    }
    tokens.push_back(value);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  if (tokens.empty()) return invalid_argument("--tokens: no token ids");
  return tokens;
}

Status run_logits(LogitsFlags flags) {
  RECGPT_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, parse_token_list(flags.tokens));
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model.dir));
  const ModelConfig& config = model->config();
  std::vector<float> entity_vectors;
  if (!flags.entity_vectors_path.empty()) {
    RECGPT_ASSIGN_OR_RETURN(NpyArray array, read_npy_f32(flags.entity_vectors_path));
    int64_t entity_dim = config.entity_adaptor ? config.entity_adaptor->entity_dim : 0;
    if (array.shape.size() != 2 || array.shape[1] != entity_dim) {
      return invalid_argument("--entity-vectors: expected float32 [num_entities, " + std::to_string(entity_dim) + "]");
    }
    entity_vectors = std::move(array.data);
  }
  // A pool just large enough for this one prompt.
  int64_t per_token_bytes = 2LL * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4;
  GeneratorOptions options = flags.model.generator_options();
  options.kv_cache_bytes = per_token_bytes * (static_cast<int64_t>(tokens.size()) + 2LL * options.block_size);
  options.prefix_caching = false;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Generator> generator, Generator::create(*model, options));
  RECGPT_ASSIGN_OR_RETURN(HostLogits logits, generator->score(tokens, entity_vectors));
  int64_t shape[] = {static_cast<int64_t>(tokens.size()), config.vocab_size};
  return write_npy_f32(flags.out_path, shape, logits);
}

}  // namespace

void add_logits_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<LogitsFlags>();
  CLI::App* command = app.add_subcommand("logits", "Write float32 logits [num_tokens, vocab] of every position");
  flags->model.add_to(*command);
  command->add_option("--tokens", flags->tokens, "Comma-separated token ids")->required();
  command->add_option("--entity-vectors", flags->entity_vectors_path,
                      "float32 .npy [num_entities, entity_dim], used in order at entity-token positions");
  command->add_option("--out", flags->out_path, "Output .npy path")->required();
  command->callback([flags, &exit_code] {
    Status status = run_logits(*flags);
    if (!status.is_ok()) exit_code = report_failure(status);
  });
}

}  // namespace recgpt::cli
