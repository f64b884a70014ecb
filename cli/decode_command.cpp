#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>

#include "cli/commands.h"
#include "cli/model_flags.h"
#include "cli/node_flags.h"
#include "cli/node_runner.h"
#include "decode_node/decode_server.h"
#include "engine/model_files.h"

namespace recgpt::cli {
namespace {

struct DecodeFlags {
  ModelFlags model;
  decode::DecodeServerOptions server;
  NodeFlagTexts texts;
};

Status run_decode(DecodeFlags& flags) {
  RECGPT_RETURN_IF_ERROR(apply_node_flag_texts(flags.texts, flags.server));
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model.dir));
  flags.server.engine = flags.model.generator_options();
  boost::asio::io_context io;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<decode::DecodeServer> server,
                          decode::DecodeServer::start(io, *model, flags.server));
  run_node_until_signal(
      io, "decode", flags.server.node_id, server->port(), server->admin_port(),
      [&](std::function<void()> done) {
        server->drain(std::chrono::seconds(flags.texts.drain_seconds), std::move(done));
      },
      [&] { server.reset(); });
  return Status::ok();
}

}  // namespace

void add_decode_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<DecodeFlags>();
  CLI::App* command = app.add_subcommand("decode", "Run a decode node: KV reservations, continuous batching, tokens");
  flags->model.add_to(*command);
  add_node_service_flags(*command, flags->server, flags->texts);
  command->callback([flags, &exit_code] {
    Status status = run_decode(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
