#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>

#include "cli/commands.h"
#include "engine/model_files.h"
#include "prefill_node/prefill_server.h"

namespace recgpt::cli {
namespace {

struct PrefillFlags {
  std::string model_dir;
  int64_t kv_cache_mib = 256;
  prefill::PrefillServerOptions server;
  std::vector<std::string> transfer_settings;  // key=value
};

Status run_prefill(PrefillFlags& flags) {
  for (const std::string& setting : flags.transfer_settings) {
    const size_t equals = setting.find('=');
    if (equals == std::string::npos) return invalid_argument("--transfer-setting '" + setting + "' is not key=value");
    flags.server.transfer_settings.emplace_back(setting.substr(0, equals), setting.substr(equals + 1));
  }
  flags.server.kv_cache_bytes = flags.kv_cache_mib << 20;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model_dir));
  boost::asio::io_context io;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<prefill::PrefillServer> server,
                          prefill::PrefillServer::start(io, *model, flags.server));
  std::printf("recgpt prefill: listening node=%s port=%u admin_port=%u\n", flags.server.node_id.c_str(),
              static_cast<unsigned>(server->port()), static_cast<unsigned>(server->admin_port()));
  std::fflush(stdout);
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& error, int signal) {
    if (error) return;
    std::fprintf(stderr, "recgpt prefill: signal %d, stopping\n", signal);
    server.reset();
    io.stop();
  });
  io.run();
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
  command->add_option("--threads", flags->server.threads, "Compute threads (0: all cores)")->check(CLI::Range(0, 1024));
  command->add_option("--node-id", flags->server.node_id, "This node's name in handshakes and metrics");
  command->add_option("--listen", flags->server.address, "Address of the control and admin ports");
  command->add_option("--port", flags->server.port, "Control port (0: any free port)");
  command->add_option("--admin-port", flags->server.admin_port, "Admin HTTP port (0: any free port)");
  command->add_option("--transfer-backend", flags->server.transfer_backend, "KV transfer backend (ucx, local)");
  command->add_option("--transfer-setting", flags->transfer_settings, "Transfer backend setting key=value");
  command->callback([flags, &exit_code] {
    Status status = run_prefill(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
