// `recgpt tokenize`: encodes text with a model folder's tokenizer.json (or decodes ids with --decode).
#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "engine/tokenizer.h"

namespace recgpt::cli {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  std::string text;
  std::string jsonl_path;
  bool decode = false;
};

Result<std::vector<int32_t>> parse_id_list(std::string_view text) {
  std::vector<int32_t> ids;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view field = text.substr(0, comma);
    while (!field.empty() && field.front() == ' ') field.remove_prefix(1);
    while (!field.empty() && field.back() == ' ') field.remove_suffix(1);
    int32_t id = 0;
    auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), id);
    if (error != std::errc() || end != field.data() + field.size()) {
      return invalid_argument("expected comma-separated token ids, got '" + std::string(field) + "'");
    }
    ids.push_back(id);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  return ids;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t index = 0; index < ids.size(); ++index) {
    if (index > 0) line += ',';
    line += std::to_string(ids[index]);
  }
  return line;
}

Status run_text(const Tokenizer& tokenizer, const TokenizeOptions& options) {
  if (options.decode) {
    RECGPT_ASSIGN_OR_RETURN(std::vector<int32_t> ids, parse_id_list(options.text));
    std::printf("%s\n", tokenizer.decode(ids).c_str());
  } else {
    std::printf("%s\n", join_ids(tokenizer.encode(options.text)).c_str());
  }
  return Status::ok();
}

// Encodes one JSON string per line into a JSON array of ids, or with --decode the reverse.
Status run_jsonl(const Tokenizer& tokenizer, const TokenizeOptions& options) {
  std::ifstream input(options.jsonl_path, std::ios::binary);
  if (!input) return not_found("cannot open '" + options.jsonl_path + "'");
  std::string line;
  for (int line_number = 1; std::getline(input, line); ++line_number) {
    if (line.empty()) continue;
    std::string where = options.jsonl_path + ":" + std::to_string(line_number);
    nlohmann::json value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (options.decode) {
      if (!value.is_array()) return invalid_argument(where + ": expected a JSON array of token ids");
      std::vector<int32_t> ids;
      for (const nlohmann::json& id : value) {
        if (!id.is_number_integer()) return invalid_argument(where + ": expected a JSON array of token ids");
        ids.push_back(id.get<int32_t>());
      }
      nlohmann::json text = tokenizer.decode(ids);
      std::printf("%s\n", text.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      if (!value.is_string()) return invalid_argument(where + ": expected a JSON string");
      std::printf("%s\n", nlohmann::json(tokenizer.encode(value.get<std::string>())).dump().c_str());
    }
  }
  if (input.bad()) return io_error("cannot read '" + options.jsonl_path + "'");
  return Status::ok();
}

Status run(const TokenizeOptions& options) {
  RECGPT_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::load(options.model_dir + "/tokenizer.json"));
  return options.jsonl_path.empty() ? run_text(tokenizer, options) : run_jsonl(tokenizer, options);
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* command = app.add_subcommand(
      "tokenize", "Print the token ids of text (comma-separated), or of each line of a JSON-lines file");
  command->add_option("--model", options->model_dir, "Model folder holding tokenizer.json")->required();
  CLI::Option* text = command->add_option("--text", options->text, "Text to encode (with --decode: ids, e.g. 1,2,3)");
  CLI::Option* jsonl = command->add_option(
      "--jsonl", options->jsonl_path,
      "File of one JSON string per line; prints one JSON array of ids per line (with --decode: the reverse)");
  text->excludes(jsonl);
  command->add_flag("--decode", options->decode, "Decode token ids into text instead of encoding");
  command->callback([options, text, jsonl, &exit_code] {
    if (text->count() == 0 && jsonl->count() == 0) {
      exit_code = report_failure(invalid_argument("tokenize needs --text or --jsonl"));
      return;
    }
    Status status = run(*options);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
