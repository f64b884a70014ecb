// `recgpt up`: the whole cluster on this machine — P prefill and D decode processes (or D colocated ones), and
// the router in this process in front of them — on 127.0.0.1, with the built-in model unless --model names one.
// Ctrl-C (or SIGTERM) drains the router, then stops the nodes.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <thread>

#include "cli/commands.h"
#include "cli/node_runner.h"
#include "common/subprocess.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"
#include "router/router_service.h"

namespace recgpt::cli {
namespace {

constexpr auto kNodeStartTimeout = std::chrono::seconds(60);

struct UpFlags {
  std::string model_dir;  // empty: the built-in model, made into the cache folder on first run
  router::RouterOptions router;
  int prefill = 1;
  int decode = 1;
  bool colocated = false;
  int kv_cache_mib = 256;
  int threads = 0;  // per node; 0: the machine's cores shared out
  int drain_seconds = 30;
  std::string tag_catalogue = "builtin";  // node/constraints.h: the catalogue the binary carries
};

// ~/.cache/recgpt/builtin-tiny (or under $XDG_CACHE_HOME), made with the tiny preset when absent.
Result<std::string> builtin_model() {
  const char* cache = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  std::filesystem::path root = cache != nullptr && *cache != '\0' ? std::filesystem::path(cache)
                               : home != nullptr                  ? std::filesystem::path(home) / ".cache"
                                                                  : std::filesystem::temp_directory_path();
  const std::filesystem::path dir = root / "recgpt" / "builtin-tiny";
  if (!std::filesystem::exists(dir / "config.json")) {
    std::fprintf(stderr, "recgpt up: writing the built-in model to %s\n", dir.c_str());
    RECGPT_RETURN_IF_ERROR(make_model({"tiny", 1, DType::kF32, dir.string()}));
  }
  return dir.string();
}

// A node process and the control ports it printed (a colocated one prints prefill's, then decode's), with the
// node ids and admin ports (/metrics, /healthz, /readyz) of those lines.
struct NodeProcess {
  Subprocess process;
  std::vector<uint16_t> ports;
  std::vector<std::pair<std::string, uint16_t>> admin;
};

Result<NodeProcess> start_node(const std::vector<std::string>& argv, int port_lines) {
  RECGPT_ASSIGN_OR_RETURN(Subprocess process, Subprocess::spawn(argv));
  NodeProcess node{std::move(process), {}, {}};
  const auto deadline = std::chrono::steady_clock::now() + kNodeStartTimeout;
  for (int i = 0; i < port_lines; ++i) {
    Result<std::string> line = node.process.read_line(deadline);
    if (!line.is_ok()) return unavailable("`" + argv[1] + "` did not start: " + line.status().message());
    std::smatch match;
    if (!std::regex_search(*line, match, std::regex(" node=(\\S+) port=(\\d+) admin_port=(\\d+)"))) {
      return unavailable("`" + argv[1] + "` printed an unexpected line: " + *line);
    }
    node.ports.push_back(static_cast<uint16_t>(std::stoi(match[2])));
    node.admin.emplace_back(match[1], static_cast<uint16_t>(std::stoi(match[3])));
  }
  return node;
}

Status run_up(UpFlags& flags) {
  std::string model_dir = flags.model_dir;
  if (model_dir.empty()) {
    RECGPT_ASSIGN_OR_RETURN(model_dir, builtin_model());
  }
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(model_dir));
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const int nodes = flags.colocated ? flags.decode : flags.prefill + flags.decode;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = flags.threads > 0 ? flags.threads : std::max(1, cores / nodes);
  const std::string catalogue = "tags=" + flags.tag_catalogue;
  std::vector<std::string> common = {"--catalogue",    catalogue,
                                     "--model",        model_dir,
                                     "--kv-cache-mib", std::to_string(flags.kv_cache_mib),
                                     "--threads",      std::to_string(threads),
                                     "--port",         "0",
                                     "--admin-port",   "0"};
  if (!flags.router.entity_store.empty()) common.insert(common.end(), {"--entity-store", flags.router.entity_store});
  std::vector<NodeProcess> children;
  auto spawn = [&](const std::string& role, int index, int port_lines,
                   std::vector<std::string> extra) -> Result<std::vector<uint16_t>> {
    std::vector<std::string> argv = {self, role};
    argv.insert(argv.end(), common.begin(), common.end());
    argv.insert(argv.end(), {"--node-id", role + "-" + std::to_string(index)});
    argv.insert(argv.end(), extra.begin(), extra.end());
    RECGPT_ASSIGN_OR_RETURN(NodeProcess node, start_node(argv, port_lines));
    std::vector<uint16_t> ports = node.ports;
    children.push_back(std::move(node));
    return ports;
  };
  const auto address = [](uint16_t port) { return "127.0.0.1:" + std::to_string(port); };
  for (int i = 0; i < (flags.colocated ? 0 : flags.prefill); ++i) {
    RECGPT_ASSIGN_OR_RETURN(auto ports, spawn("prefill", i, 1, {}));
    flags.router.prefill_nodes.push_back(address(ports[0]));
  }
  for (int i = 0; i < flags.decode; ++i) {
    if (flags.colocated) {
      RECGPT_ASSIGN_OR_RETURN(auto ports,
                              spawn("serve", i, 2, {"--prefill-kv-cache-mib", std::to_string(flags.kv_cache_mib)}));
      flags.router.prefill_nodes.push_back(address(ports[0]));
      flags.router.decode_nodes.push_back(address(ports[1]));
    } else {
      RECGPT_ASSIGN_OR_RETURN(auto ports, spawn("decode", i, 1, {}));
      flags.router.decode_nodes.push_back(address(ports[0]));
    }
  }

  boost::asio::io_context io;
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<router::RouterService> service,
                          router::RouterService::start(io, *model, flags.router));
  std::printf("recgpt up: serving http://%s:%u/v1 (model %s; %d prefill, %d decode%s)\n", flags.router.address.c_str(),
              static_cast<unsigned>(service->port()), flags.router.model_name.c_str(),
              static_cast<int>(flags.router.prefill_nodes.size()), flags.decode, flags.colocated ? ", colocated" : "");
  std::string metrics;
  for (const NodeProcess& child : children) {
    for (const auto& [node_id, admin_port] : child.admin) {
      metrics +=
          (metrics.empty() ? " " : ", ") + node_id + " http://127.0.0.1:" + std::to_string(admin_port) + "/metrics";
    }
  }
  std::printf("recgpt up: node metrics (docs/metrics.md):%s\n", metrics.c_str());
  std::fflush(stdout);
  run_node_until_signal(
      io, "up", "router", service->port(), service->port(),
      [&](std::function<void()> done) { service->drain(std::chrono::seconds(flags.drain_seconds), std::move(done)); },
      [&] { service.reset(); });
  for (NodeProcess& child : children) child.process.kill(SIGTERM);
  for (NodeProcess& child : children) {
    (void)child.process.wait(std::chrono::steady_clock::now() + std::chrono::seconds(flags.drain_seconds + 5));
  }
  return Status::ok();
}

}  // namespace

void add_up_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<UpFlags>();
  CLI::App* command = app.add_subcommand(
      "up", "Start a local cluster (prefill and decode processes, and the router) on 127.0.0.1; Ctrl-C stops it");
  command->add_option("--model", flags->model_dir, "Model folder (default: the built-in model, made on first run)");
  command->add_option("--port", flags->router.port, "The router's HTTP port (0: any free port)");
  command->add_option("--prefill", flags->prefill, "Prefill node processes")->check(CLI::Range(1, 64));
  command->add_option("--decode", flags->decode, "Decode node processes")->check(CLI::Range(1, 64));
  command->add_flag("--colocated", flags->colocated,
                    "Colocated nodes (prefill and decode in one process, --decode of them)");
  command->add_option("--kv-cache-mib", flags->kv_cache_mib, "Each node's KV pool in MiB")
      ->check(CLI::Range(1, 1 << 20));
  command->add_option("--threads", flags->threads, "Compute threads per node (0: the cores shared out)")
      ->check(CLI::Range(0, 1024));
  command->add_option("--policy", flags->router.policy, "Placement: prefix_aware, least_loaded or round_robin");
  command->add_option(
      "--tag-catalogue", flags->tag_catalogue,
      "The tag catalogue the workflows' experts decode under (default: builtin, data/tag_catalogue.txt)");
  command->add_option("--workflows", flags->router.workflows_dir,
                      "Folder of workflow definitions (*.json) (default: the built-in intent, explain, judge)");
  command->add_option("--entity-store", flags->router.entity_store,
                      "Entity store (given to the nodes too): history items it knows become entity tokens");
  command->add_option("--api-key", flags->router.api_key, "Bearer token required on /v1/* (none: no auth)");
  command->add_option("--drain-seconds", flags->drain_seconds, "On Ctrl-C, how long requests may take to finish")
      ->check(CLI::Range(0, 3600));
  command->callback([flags, &exit_code] {
    Status status = run_up(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
