#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <fstream>

#include "cli/commands.h"
#include "cli/node_runner.h"
#include "engine/model_files.h"
#include "router/router_service.h"

namespace recgpt::cli {
namespace {

struct RouterFlags {
  std::string model_dir;
  router::RouterOptions router;
  std::string api_key_file;
  int request_timeout_seconds = 120;
  int node_silence_seconds = 10;
  int dns_refresh_seconds = 5;
  int drain_seconds = 30;
};

Status run_router(RouterFlags& flags) {
  if (!flags.api_key_file.empty()) {
    std::ifstream file(flags.api_key_file);
    if (!file) return not_found("--api-key-file '" + flags.api_key_file + "' cannot be read");
    std::getline(file, flags.router.api_key);
    if (flags.router.api_key.empty()) return invalid_argument("--api-key-file '" + flags.api_key_file + "' is empty");
  }
  flags.router.request_timeout = std::chrono::seconds(flags.request_timeout_seconds);
  flags.router.node_silence = std::chrono::seconds(flags.node_silence_seconds);
  flags.router.dns_refresh = std::chrono::seconds(flags.dns_refresh_seconds);
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(flags.model_dir));
  boost::asio::io_context io;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<router::RouterService> service,
                          router::RouterService::start(io, *model, flags.router));
  run_node_until_signal(
      io, "router", "router", service->port(), service->port(),
      [&](std::function<void()> done) { service->drain(std::chrono::seconds(flags.drain_seconds), std::move(done)); },
      [&] { service.reset(); });
  return Status::ok();
}

}  // namespace

void add_router_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<RouterFlags>();
  CLI::App* command =
      app.add_subcommand("router", "Run the router: the OpenAI-compatible HTTP API over prefill and decode nodes");
  command->add_option("--model", flags->model_dir, "Model folder (its tokenizer and config)")->required();
  command->add_option("--prefill", flags->router.prefill_nodes,
                      "A prefill node's control address host:port (none: the decode nodes prefill locally)");
  command->add_option("--decode", flags->router.decode_nodes, "A decode node's control address host:port");
  command->add_option("--prefill-dns", flags->router.prefill_dns,
                      "name:port whose DNS addresses are prefill nodes, resolved again every --dns-refresh-seconds");
  command->add_option("--decode-dns", flags->router.decode_dns,
                      "name:port whose DNS addresses are decode nodes (e.g. a Kubernetes headless Service)");
  command->add_option("--dns-refresh-seconds", flags->dns_refresh_seconds, "How often DNS names are resolved again")
      ->check(CLI::Range(1, 3600));
  command->add_option("--workflows", flags->router.workflows_dir,
                      "Folder of workflow definitions (*.json) served at /v1/workflows/{name} (default: built-ins)");
  command->add_option("--entity-store", flags->router.entity_store,
                      "Entity store: history items it knows become entity tokens in workflow contexts");
  command->add_option("--listen", flags->router.address, "Address of the HTTP port");
  command->add_option("--port", flags->router.port, "HTTP port (0: any free port)");
  command->add_option("--model-name", flags->router.model_name, "The model name clients use");
  command->add_option("--policy", flags->router.policy, "Placement: prefix_aware, least_loaded or round_robin");
  command->add_option("--api-key", flags->router.api_key, "Bearer token required on /v1/* (none: no auth)");
  command->add_option("--api-key-file", flags->api_key_file, "A file whose first line is the bearer token");
  command
      ->add_option("--request-timeout-seconds", flags->request_timeout_seconds,
                   "A request's deadline unless it sets `timeout`")
      ->check(CLI::Range(1, 3600));
  command
      ->add_option("--node-silence-seconds", flags->node_silence_seconds,
                   "A node that sends nothing (not even its load report, each second) for this long is cut off: "
                   "its calls fail over to other nodes, and it is connected again once it answers")
      ->check(CLI::Range(2, 3600));
  command->add_option("--max-connections", flags->router.max_connections, "Concurrent HTTP connections")
      ->check(CLI::Range(1, 1 << 20));
  command->add_option("--drain-seconds", flags->drain_seconds, "On SIGTERM, how long requests may take to finish")
      ->check(CLI::Range(0, 3600));
  command->callback([flags, &exit_code] {
    Status status = run_router(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
