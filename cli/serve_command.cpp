#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "cli/model_flags.h"
#include "cli/node_runner.h"
#include "decode_node/decode_server.h"
#include "engine/model_files.h"
#include "prefill_node/prefill_server.h"

namespace recgpt::cli {
namespace {

// Colocated mode: a prefill node and a decode node in one process over the in-process (`local`) transfer
// backend, each with its own control and admin port: the smallest deployment, and the baseline every
// disaggregation benchmark compares with. Callers drive it exactly as they drive two separate nodes.
struct ServeFlags {
  ModelFlags model;
  int64_t prefill_kv_cache_mib = 256;
  decode::DecodeServerOptions decode;
  prefill::PrefillServerOptions prefill;
  std::vector<std::string> catalogues;  // name=path
  int drain_seconds = 30;
};

Status run_serve(ServeFlags& flags) {
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model.dir));
  flags.decode.engine = flags.model.generator_options();
  flags.decode.transfer_backend = "local";
  flags.prefill.transfer_backend = "local";
  flags.prefill.kv_cache_bytes = flags.prefill_kv_cache_mib << 20;
  flags.prefill.block_size = flags.model.block_size;
  flags.prefill.threads = flags.model.threads;
  flags.decode.entity_store = flags.prefill.entity_store;
  RECGPT_ASSIGN_OR_RETURN(flags.decode.catalogues, parse_key_values(flags.catalogues, "--catalogue"));
  flags.prefill.catalogues = flags.decode.catalogues;
  flags.decode.node_id = flags.prefill.node_id + "-decode";
  flags.prefill.node_id += "-prefill";
  boost::asio::io_context io;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<decode::DecodeServer> decode,
                          decode::DecodeServer::start(io, *model, flags.decode));
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<prefill::PrefillServer> prefill,
                          prefill::PrefillServer::start(io, *model, flags.prefill));
  std::printf("recgpt serve: prefill node=%s port=%u admin_port=%u\n", flags.prefill.node_id.c_str(),
              static_cast<unsigned>(prefill->port()), static_cast<unsigned>(prefill->admin_port()));
  run_node_until_signal(
      io, "serve", flags.decode.node_id, decode->port(), decode->admin_port(),
      [&](std::function<void()> done) {
        // The prefill side first (its requests feed decode reservations), then the decode side.
        prefill->drain(std::chrono::seconds(flags.drain_seconds),
                       [&, done] { decode->drain(std::chrono::seconds(flags.drain_seconds), done); });
      },
      [&] {
        prefill.reset();
        decode.reset();
      });
  return Status::ok();
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  flags->prefill.node_id = "colocated";
  CLI::App* command =
      app.add_subcommand("serve", "Run prefill and decode in one process (colocated mode, in-process KV transfer)");
  flags->model.add_to(*command);
  command->add_option("--prefill-kv-cache-mib", flags->prefill_kv_cache_mib, "The prefill side's KV pool in MiB")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  command->add_option("--node-id", flags->prefill.node_id, "Name prefix of the two nodes");
  command->add_option("--entity-store", flags->prefill.entity_store, "Entity store for entity inputs given by id");
  command->add_option("--catalogue", flags->catalogues, "A choice catalogue for constrained decoding, name=path");
  command->add_option("--listen", flags->decode.address, "Address of the control and admin ports");
  command->add_option("--port", flags->decode.port, "The decode side's control port (0: any free port)");
  command->add_option("--admin-port", flags->decode.admin_port, "The decode side's admin port (0: any free port)");
  command->add_option("--prefill-port", flags->prefill.port, "The prefill side's control port (0: any free port)");
  command->add_option("--prefill-admin-port", flags->prefill.admin_port, "The prefill side's admin port");
  command->add_option("--drain-seconds", flags->drain_seconds, "On SIGTERM, how long running work may take to finish")
      ->check(CLI::Range(0, 3600));
  command->callback([flags, &exit_code] {
    flags->prefill.address = flags->decode.address;
    Status status = run_serve(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
