#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>

#include "cli/commands.h"
#include "cli/model_flags.h"
#include "cli/node_flags.h"
#include "cli/node_runner.h"
#include "engine/backend.h"
#include "engine/model_files.h"
#include "prefill_node/prefill_server.h"

namespace recgpt::cli {
namespace {

struct PrefillFlags {
  std::string model_dir;
  int64_t kv_cache_mib = 256;
  std::string kv_dtype = "f32";
  prefill::PrefillServerOptions server;
  NodeFlagTexts texts;
};

Status run_prefill(PrefillFlags& flags) {
  RECGPT_RETURN_IF_ERROR(apply_node_flag_texts(flags.texts, flags.server));
  flags.server.kv_cache_bytes = flags.kv_cache_mib << 20;
  flags.server.kv_dtype = kv_dtype_from_name(flags.kv_dtype);
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model_dir));
  boost::asio::io_context io;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<prefill::PrefillServer> server,
                          prefill::PrefillServer::start(io, *model, flags.server));
  run_node_until_signal(
      io, "prefill", flags.server.node_id, server->port(), server->admin_port(),
      [&](std::function<void()> done) {
        server->drain(std::chrono::seconds(flags.texts.drain_seconds), std::move(done));
      },
      [&] { server.reset(); });
  return Status::ok();
}

}  // namespace

void add_prefill_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<PrefillFlags>();
  CLI::App* command = app.add_subcommand("prefill", "Run a prefill node: prefix cache, compute, layer-wise KV push");
  command->add_option("--model", flags->model_dir, "Model folder (Hugging Face layout)")->required();
  command->add_option("--kv-cache-mib", flags->kv_cache_mib, "This node's KV pool (prefix cache) in MiB")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  command->add_option("--block-size", flags->server.block_size, "Tokens per KV block")->check(CLI::Range(1, 1024));
  command
      ->add_option("--kv-dtype", flags->kv_dtype,
                   "KV cache element type, the decode nodes' (fp8_e4m3: the cuda backend's)")
      ->check(CLI::IsMember(kv_dtype_names()));
  command->add_option("--threads", flags->server.threads, "Compute threads (0: all cores)")->check(CLI::Range(0, 1024));
  command->add_flag_callback(
      "--weights-in-place", [flags] { flags->server.repack_weights = false; }, kWeightsInPlaceHelp);
  command->add_option("--backend", flags->server.backend, "Compute backend")
      ->check(CLI::IsMember(available_backends()));
  command->add_option("--cuda-device", flags->server.cuda_device, "GPU of the cuda backend")
      ->check(CLI::NonNegativeNumber);
  command
      ->add_option("--max-batch-tokens", flags->server.limits.max_batch_tokens,
                   "Prompt tokens per forward step (longer prompts are computed in chunks)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  command
      ->add_option("--max-batch-requests", flags->server.limits.max_batch_requests,
                   "Prefill requests in progress at once")
      ->check(CLI::Range(1, 4096));
  add_node_service_flags(*command, flags->server, flags->texts);
  command->callback([flags, &exit_code] {
    Status status = run_prefill(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
