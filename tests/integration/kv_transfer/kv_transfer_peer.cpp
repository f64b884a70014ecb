// The other process of the kv_transfer two-process tests: a writer (prefill side) or a reader (decode side) of
// one StreamScenario over a named backend, driven by its parent over stdin/stdout, one line per step.
//
//   kv_transfer_peer writer --backend ucx --setting tls=tcp --seed 7 --layers 6 [--layer-delay-ms 200]
//     out: endpoint <hex>
//     in:  reader <endpoint hex> <region key hex>
//     out: connected            (connected to the reader and imported its region)
//     in:  go                   (the reader connected back and expects the request)
//     out: layer <l>            after each layer's writes were submitted (then sleeps the delay)
//     out: finished ok | finished <error>; exit 0 | 1
//   kv_transfer_peer reader --backend ucx --setting tls=tcp --seed 7 --layers 6
// With --memory cuda both caches live in CUDA device memory (device: the `device` setting, default 0): the
// writer uploads its pattern, the reader checks every byte of a download (no checksum: it reads host memory).
//     out: endpoint <hex> <region key hex>
//     in:  writer <endpoint hex>
//     out: expecting
//     out: received ok <bytes checked> | received <error>; then waits for end of stdin; exit 0 | 1
// Any setup failure prints "error <message>" and exits 2. Only protocol lines go to stdout: everything else
// written there (UCX logs to stdout) is moved to stderr.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "common/hex.h"
#include "kv_transfer/kv_stream.h"
#include "kv_transfer/transfer_engine.h"
#include "tests/integration/kv_transfer/device_memory.h"
#include "tests/integration/kv_transfer/stream_scenario.h"

namespace recgpt::kv::testing {
namespace {

constexpr std::chrono::seconds kStepTimeout(20);

// The protocol's output: the original stdout, whose descriptor 1 now points at stderr.
std::ostream& protocol() {
  static std::ofstream stream = [] {
    int fd = ::dup(STDOUT_FILENO);
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    return std::ofstream("/proc/self/fd/" + std::to_string(fd));
  }();
  return stream;
}

struct PeerOptions {
  std::string backend = "ucx";
  std::vector<std::string> settings;  // key=value
  uint64_t seed = 1;
  int layers = 6;
  int layer_delay_ms = 0;
  std::string memory = "host";  // or "cuda"

  bool on_device() const { return memory == "cuda"; }
  int device() const {
    for (const std::string& setting : settings) {
      if (setting.rfind("device=", 0) == 0) return std::stoi(setting.substr(7));
    }
    return 0;
  }
};

[[noreturn]] void fail_setup(const Status& status) {
  protocol() << "error " << status.to_string() << std::endl;
  std::exit(2);
}

template <typename T>
T value_or_fail(Result<T> result) {
  if (!result.is_ok()) fail_setup(result.status());
  return std::move(result).value();
}

std::unique_ptr<TransferEngine> make_engine(const PeerOptions& options, const std::string& name) {
  TransferEngineOptions engine_options;
  engine_options.name = name;
  for (const std::string& setting : options.settings) {
    size_t equals = setting.find('=');
    if (equals == std::string::npos) fail_setup(invalid_argument("setting '" + setting + "' is not key=value"));
    engine_options.settings.emplace_back(setting.substr(0, equals), setting.substr(equals + 1));
  }
  return value_or_fail(create_transfer_engine(options.backend, engine_options));
}

// The words of the next stdin line, the first of which must be `tag`.
std::vector<std::string> expect_line(const std::string& tag) {
  std::string line;
  if (!std::getline(std::cin, line)) fail_setup(unavailable("stdin closed before '" + tag + "'"));
  std::istringstream words(line);
  std::vector<std::string> result;
  for (std::string word; words >> word;) result.push_back(word);
  if (result.empty() || result[0] != tag) fail_setup(invalid_argument("expected '" + tag + "', got: " + line));
  return result;
}

Deadline step_deadline() { return Clock::now() + kStepTimeout; }

int run_writer(const PeerOptions& options) {
  const StreamScenario scenario = StreamScenario::from_seed(options.seed, options.layers);
  auto engine = make_engine(options, "writer");
  CacheMemory source(scenario.source);
  fill_source_pattern(source, scenario.seed);
  DeviceMemory device_source;
  if (options.on_device()) {
    device_source = value_or_fail(DeviceMemory::allocate(source.size(), options.device()));
    if (Status uploaded = device_source.upload(source); !uploaded.is_ok()) fail_setup(uploaded);
  }
  LocalRegionId source_region =
      value_or_fail(engine->register_memory(options.on_device() ? device_source.region() : source.region()));
  protocol() << "endpoint " << to_hex(value_or_fail(engine->local_endpoint())) << std::endl;

  std::vector<std::string> reader = expect_line("reader");
  if (reader.size() != 3) fail_setup(invalid_argument("'reader' wants an endpoint and a key"));
  PeerId peer = value_or_fail(engine->connect(value_or_fail(from_hex(reader[1])), step_deadline()));
  RemoteRegionId destination = value_or_fail(engine->import_region(peer, value_or_fail(from_hex(reader[2]))));
  protocol() << "connected" << std::endl;
  expect_line("go");  // the reader has connected back and expects the request
  auto writer =
      value_or_fail(KvStreamWriter::create(*engine, writer_config(scenario, peer, source_region, destination, source)));
  for (int layer = 0; layer < scenario.source.num_layers; ++layer) {
    Status written = writer->write_layer(layer);
    if (!written.is_ok()) break;  // finish() reports it
    protocol() << "layer " << layer << std::endl;
    std::this_thread::sleep_for(std::chrono::milliseconds(options.layer_delay_ms));
  }
  Status finished = writer->finish(step_deadline());
  protocol() << "finished " << (finished.is_ok() ? std::string("ok") : finished.to_string()) << std::endl;
  return finished.is_ok() ? 0 : 1;
}

int run_reader(const PeerOptions& options) {
  const StreamScenario scenario = StreamScenario::from_seed(options.seed, options.layers);
  auto engine = make_engine(options, "reader");
  CacheMemory destination(scenario.destination);
  destination.fill(std::byte{0});
  DeviceMemory device_destination;
  if (options.on_device()) {
    device_destination = value_or_fail(DeviceMemory::allocate(destination.size(), options.device()));
    if (Status uploaded = device_destination.upload(destination); !uploaded.is_ok()) fail_setup(uploaded);
  }
  LocalRegionId region =
      value_or_fail(engine->register_memory(options.on_device() ? device_destination.region() : destination.region()));
  KvStreamReceiver receiver(*engine);
  protocol() << "endpoint " << to_hex(value_or_fail(engine->local_endpoint())) << " "
             << to_hex(value_or_fail(engine->export_region(region))) << std::endl;

  std::vector<std::string> writer = expect_line("writer");
  if (writer.size() != 2) fail_setup(invalid_argument("'writer' wants an endpoint"));
  PeerId peer = value_or_fail(engine->connect(value_or_fail(from_hex(writer[1])), step_deadline()));
  std::optional<KvStreamDestination> checked_view;
  if (!options.on_device()) checked_view = destination_view(scenario, destination);
  Status expected = receiver.expect(scenario.request_id, peer, step_deadline(), checked_view);
  if (!expected.is_ok()) fail_setup(expected);
  protocol() << "expecting" << std::endl;
  auto completion = receiver.wait(scenario.request_id, step_deadline());
  int exit_code = 1;
  if (!completion.is_ok()) {
    protocol() << "received " << completion.status().to_string() << std::endl;
  } else {
    if (options.on_device()) {
      if (Status downloaded = device_destination.download(destination); !downloaded.is_ok()) fail_setup(downloaded);
    }
    Mismatches mismatches = count_mismatches(scenario, destination, completion->layers);
    bool whole = completion->layers == all_layers(scenario) && (completion->checksum_verified || options.on_device());
    if (mismatches.differing == 0 && whole) {
      protocol() << "received ok " << mismatches.checked << std::endl;
      exit_code = 0;
    } else {
      protocol() << "received wrong: " << mismatches.differing << " of " << mismatches.checked
                 << " bytes differ, layers " << completion->layers.size() << ", checksum verified "
                 << completion->checksum_verified << std::endl;
    }
  }
  for (std::string line; std::getline(std::cin, line);) {
  }
  return exit_code;
}

}  // namespace
}  // namespace recgpt::kv::testing

int main(int argc, char** argv) {
  using namespace recgpt::kv::testing;
  CLI::App app{"kv_transfer test peer"};
  app.require_subcommand(1);
  PeerOptions options;
  int exit_code = 2;
  for (const char* role : {"writer", "reader"}) {
    CLI::App* command = app.add_subcommand(role, std::string("the ") + role + " of one stream");
    command->add_option("--backend", options.backend);
    command->add_option("--setting", options.settings, "backend setting key=value");
    command->add_option("--seed", options.seed);
    command->add_option("--layers", options.layers)->check(CLI::Range(1, 64));
    command->add_option("--layer-delay-ms", options.layer_delay_ms)->check(CLI::Range(0, 60000));
    command->add_option("--memory", options.memory, "where the cache lives")->check(CLI::IsMember({"host", "cuda"}));
    command->callback([&options, &exit_code, role] {
      exit_code = std::string(role) == "writer" ? run_writer(options) : run_reader(options);
    });
  }
  protocol();  // before any library can write to stdout
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
