#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>

#include "cli/commands.h"
#include "cli/model_flags.h"
#include "decode_node/decode_server.h"
#include "engine/model_files.h"

namespace recgpt::cli {
namespace {

struct DecodeFlags {
  ModelFlags model;
  decode::DecodeServerOptions server;
  std::vector<std::string> transfer_settings;  // key=value
};

Status run_decode(DecodeFlags& flags) {
  for (const std::string& setting : flags.transfer_settings) {
    const size_t equals = setting.find('=');
    if (equals == std::string::npos) return invalid_argument("--transfer-setting '" + setting + "' is not key=value");
    flags.server.transfer_settings.emplace_back(setting.substr(0, equals), setting.substr(equals + 1));
  }
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model.dir));
  flags.server.engine = flags.model.generator_options();
  boost::asio::io_context io;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<decode::DecodeServer> server,
                          decode::DecodeServer::start(io, *model, flags.server));
  // One line for whoever started this node (tests, scripts) to learn the ports; then logs go to stderr.
  std::printf("recgpt decode: listening node=%s port=%u admin_port=%u\n", flags.server.node_id.c_str(),
              static_cast<unsigned>(server->port()), static_cast<unsigned>(server->admin_port()));
  std::fflush(stdout);
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& error, int signal) {
    if (error) return;
    std::fprintf(stderr, "recgpt decode: signal %d, stopping\n", signal);
    server.reset();  // closes every connection: their reservations and sequences end, blocks return
    io.stop();
  });
  io.run();
  return Status::ok();
}

}  // namespace

void add_decode_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<DecodeFlags>();
  CLI::App* command = app.add_subcommand("decode", "Run a decode node: KV reservations, continuous batching, tokens");
  flags->model.add_to(*command);
  command->add_option("--node-id", flags->server.node_id, "This node's name in handshakes and metrics");
  command->add_option("--listen", flags->server.address, "Address of the control and admin ports");
  command->add_option("--port", flags->server.port, "Control port (0: any free port)");
  command->add_option("--admin-port", flags->server.admin_port, "Admin HTTP port (0: any free port)");
  command->add_option("--transfer-backend", flags->server.transfer_backend, "KV transfer backend (ucx, local)");
  command->add_option("--transfer-setting", flags->transfer_settings, "Transfer backend setting key=value");
  command->callback([flags, &exit_code] {
    Status status = run_decode(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
