#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/model_flags.h"
#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine/tokenizer.h"

namespace recgpt::cli {
namespace {

struct GenerateFlags {
  ModelFlags model;
  std::string prompt;
  int max_tokens = 32;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  bool chat = false;
};

// The ChatML turn Qwen3 models expect when `chat` is set; the raw prompt otherwise.
std::string build_prompt(const GenerateFlags& flags) {
  if (!flags.chat) return flags.prompt;
  return "<|im_start|>user\n" + flags.prompt + "<|im_end|>\n<|im_start|>assistant\n";
}

Status run_generate(const GenerateFlags& flags) {
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model.dir));
  RECGPT_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::load(model->tokenizer_path()));
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Generator> generator,
                          Generator::create(*model, flags.model.generator_options()));
  GenerationRequest request;
  request.prompt = tokenizer.encode(build_prompt(flags));
  request.max_new_tokens = flags.max_tokens;
  request.sampling = {.temperature = flags.temperature,
                      .top_k = flags.top_k,
                      .top_p = flags.top_p,
                      .repetition_penalty = flags.repetition_penalty,
                      .seed = flags.seed};
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) {
    if (auto id = tokenizer.token_to_id(stop)) request.stop_tokens.push_back(*id);
  }
  size_t prompt_tokens = request.prompt.size();
  RECGPT_RETURN_IF_ERROR(generator->add(std::move(request)).status());

  StreamingDetokenizer detokenizer(tokenizer, /*skip_special_tokens=*/true);
  auto start = std::chrono::steady_clock::now();
  double first_token_seconds = 0;
  int64_t generated = 0;
  while (!generator->idle()) {
    RECGPT_ASSIGN_OR_RETURN(std::vector<StepToken> tokens, generator->step());
    for (const StepToken& token : tokens) {
      if (token.finish == FinishReason::kOutOfKvBlocks) return resource_exhausted("KV cache too small for the prompt");
      if (token.token < 0 || token.finish == FinishReason::kStopToken) continue;
      if (generated++ == 0) {
        first_token_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      std::string text = detokenizer.push(token.token);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
  }
  std::string rest = detokenizer.finish();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double decode_rate = generated > 1 ? (generated - 1) / (seconds - first_token_seconds) : 0.0;
  std::fprintf(stderr, "recgpt: %zu prompt tokens, %lld generated; first token %.3f s, decode %.1f tokens/s\n",
               prompt_tokens, static_cast<long long>(generated), first_token_seconds, decode_rate);
  report_memory(*model, generator->kv_cache());
  return Status::ok();
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* command = app.add_subcommand("generate", "Generate text from a prompt with one model");
  flags->model.add_to(*command);
  command->add_option("--prompt", flags->prompt, "Prompt text")->required();
  command->add_option("--max-tokens", flags->max_tokens, "Tokens to generate at most")->check(CLI::PositiveNumber);
  command->add_option("--temperature", flags->temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  command->add_option("--top-k", flags->top_k, "Keep the k most likely tokens (0 = off)");
  command->add_option("--top-p", flags->top_p, "Nucleus sampling mass");
  command->add_option("--repetition-penalty", flags->repetition_penalty, "1 = off");
  command->add_option("--seed", flags->seed, "Sampling seed");
  command->add_flag("--chat", flags->chat, "Wrap the prompt in a ChatML user turn");
  command->callback([flags, &exit_code] {
    Status status = run_generate(*flags);
    if (!status.is_ok()) exit_code = report_failure(status);
  });
}

}  // namespace recgpt::cli
