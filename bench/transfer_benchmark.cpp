#include "bench/transfer_benchmark.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>

#include "common/hex.h"
#include "common/subprocess.h"
#include "kv_transfer/kv_layout.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt {
namespace {

using kv::Clock;
using std::chrono::seconds;

constexpr seconds kStepTimeout(60);

Result<std::unique_ptr<kv::TransferEngine>> make_engine(const TransferBenchOptions& options, const std::string& name) {
  kv::TransferEngineOptions engine_options;
  engine_options.name = name;
  if (!options.tls.empty()) engine_options.settings.emplace_back("tls", options.tls);
  return kv::create_transfer_engine(options.backend, engine_options);
}

// A one-layer KV layout whose blocks are `block_bytes` long, so the KV layout helper makes the copies.
kv::KvLayoutDescription block_layout(int64_t block_bytes, int64_t num_blocks) {
  kv::KvLayoutDescription layout;
  layout.num_layers = 1;
  layout.num_kv_heads = 1;
  layout.block_size = 1;
  layout.head_dim = static_cast<int>(block_bytes / 4);
  layout.dtype = "f32";
  layout.num_blocks = num_blocks;
  layout.array_stride_bytes = static_cast<uint64_t>(block_bytes) * num_blocks;
  return layout;
}

// The writes of one timed run. kRepeated: block 0 onto block 0, bytes_per_run / block_bytes times. Otherwise
// the K and V arrays of one layer filling the regions, blocks mapped in random destination runs of
// `blocks_per_run` adjacent blocks; one op per block, or coalesced.
Result<std::vector<kv::WriteOp>> run_ops(const TransferBenchOptions& options, int64_t block_bytes, OpPattern pattern,
                                         kv::LocalRegionId source, kv::RemoteRegionId destination) {
  if (pattern == OpPattern::kRepeated) {
    const kv::WriteOp op{source, 0, destination, 0, static_cast<uint64_t>(block_bytes)};
    return std::vector<kv::WriteOp>(static_cast<size_t>(options.bytes_per_run / block_bytes), op);
  }
  const int64_t num_blocks = options.bytes_per_run / 2 / block_bytes;  // per array; K and V make the run
  const int64_t run_blocks = std::min(options.blocks_per_run, num_blocks);
  const int64_t runs = num_blocks / run_blocks;
  std::vector<int64_t> run_order(runs);
  std::iota(run_order.begin(), run_order.end(), 0);
  std::shuffle(run_order.begin(), run_order.end(), std::mt19937(7));
  std::vector<int32_t> source_blocks, destination_blocks;
  for (int64_t run = 0; run < runs; ++run) {
    for (int64_t i = 0; i < run_blocks; ++i) {
      source_blocks.push_back(static_cast<int32_t>(run * run_blocks + i));
      destination_blocks.push_back(static_cast<int32_t>(run_order[run] * run_blocks + i));
    }
  }
  const kv::KvLayoutDescription layout = block_layout(block_bytes, num_blocks);
  RECGPT_ASSIGN_OR_RETURN(std::vector<kv::BlockCopy> copies,
                          kv::layer_copies(layout, source_blocks, layout, destination_blocks, 0));
  std::vector<kv::WriteOp> ops;
  for (const kv::BlockCopy& copy : copies) {
    // One op per copy, or the copy cut back into its blocks.
    const uint64_t piece = pattern == OpPattern::kCoalesced ? copy.length : static_cast<uint64_t>(block_bytes);
    for (uint64_t offset = 0; offset < copy.length; offset += piece) {
      ops.push_back({source, copy.source_offset + offset, destination, copy.destination_offset + offset, piece});
    }
  }
  return ops;
}

// Pins the calling process's threads started from now on (and this one) to `cpu`; no-op for -1.
Status pin_to_cpu(int cpu) {
  if (cpu < 0) return Status::ok();
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof(set), &set) != 0) {
    return invalid_argument("cannot pin to CPU " + std::to_string(cpu) + ": " + std::strerror(errno));
  }
  return Status::ok();
}

std::vector<std::string> words_of(const std::string& line) {
  std::istringstream stream(line);
  std::vector<std::string> words;
  for (std::string word; stream >> word;) words.push_back(word);
  return words;
}

std::vector<std::string> peer_arguments(const TransferBenchOptions& options) {
  std::vector<std::string> arguments = {
      options.self_path, "bench",         "transfer",        "--serve",
      "--backend",       options.backend, "--bytes-per-run", std::to_string(options.bytes_per_run)};
  if (!options.tls.empty()) arguments.insert(arguments.end(), {"--tls", options.tls});
  arguments.insert(arguments.end(), {"--peer-cpu", std::to_string(options.peer_cpu)});
  return arguments;
}

}  // namespace

namespace {

// Sets up the peer's side: a region allocated by the engine (zeroed, so touched, and shareable with a peer of
// this host). The line to print: "endpoint <hex> <key hex>".
Result<std::string> serve_setup(const TransferBenchOptions& options, std::unique_ptr<kv::TransferEngine>& engine) {
  RECGPT_RETURN_IF_ERROR(pin_to_cpu(options.peer_cpu));
  RECGPT_ASSIGN_OR_RETURN(engine, make_engine(options, "bench-reader"));
  RECGPT_ASSIGN_OR_RETURN(kv::AllocatedRegion region, engine->allocate_memory(options.bytes_per_run));
  RECGPT_ASSIGN_OR_RETURN(kv::Bytes endpoint, engine->local_endpoint());
  RECGPT_ASSIGN_OR_RETURN(kv::Bytes key, engine->export_region(region.id));
  return "endpoint " + to_hex(endpoint) + " " + to_hex(key);
}

}  // namespace

int serve_transfer_bench_peer(const TransferBenchOptions& options) {
  std::unique_ptr<kv::TransferEngine> engine;
  Result<std::string> ready = serve_setup(options, engine);
  std::cout << (ready.is_ok() ? *ready : "error " + ready.status().to_string()) << std::endl;
  if (!ready.is_ok()) return 2;
  for (std::string line; std::getline(std::cin, line);) {
  }
  return 0;
}

Result<TransferBenchReport> run_transfer_bench(const TransferBenchOptions& options) {
  for (int64_t block : options.block_bytes) {
    if (block < 64 || block % 64 != 0 || block * 2 > options.bytes_per_run) {
      return invalid_argument("block size " + std::to_string(block) +
                              " must be a multiple of 64, with a K and a V block within bytes-per-run");
    }
  }
  RECGPT_ASSIGN_OR_RETURN(Subprocess peer, Subprocess::spawn(peer_arguments(options)));
  RECGPT_RETURN_IF_ERROR(pin_to_cpu(options.writer_cpu));  // after the spawn: the peer pins itself
  RECGPT_ASSIGN_OR_RETURN(std::string line, peer.read_line(Clock::now() + kStepTimeout));
  std::vector<std::string> words = words_of(line);
  if (words.size() != 3 || words[0] != "endpoint") return unavailable("the benchmark peer said: " + line);
  RECGPT_ASSIGN_OR_RETURN(std::vector<std::byte> endpoint, from_hex(words[1]));
  RECGPT_ASSIGN_OR_RETURN(std::vector<std::byte> key, from_hex(words[2]));

  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<kv::TransferEngine> engine, make_engine(options, "bench-writer"));
  RECGPT_ASSIGN_OR_RETURN(kv::AllocatedRegion source, engine->allocate_memory(options.bytes_per_run));
  std::fill(source.base, source.base + options.bytes_per_run, std::byte{0x5a});
  const kv::LocalRegionId source_region = source.id;
  RECGPT_ASSIGN_OR_RETURN(kv::PeerId reader, engine->connect(endpoint, Clock::now() + kStepTimeout));
  RECGPT_ASSIGN_OR_RETURN(kv::RemoteRegionId destination, engine->import_region(reader, key));

  TransferBenchReport report;
  report.backend = options.backend;
  report.tls = options.tls;
  for (int64_t block : options.block_bytes) {
    for (OpPattern pattern : {OpPattern::kRepeated, OpPattern::kPerBlock, OpPattern::kCoalesced}) {
      RECGPT_ASSIGN_OR_RETURN(std::vector<kv::WriteOp> ops,
                              run_ops(options, block, pattern, source_region, destination));
      const uint64_t bytes = std::accumulate(ops.begin(), ops.end(), uint64_t{0},
                                             [](uint64_t sum, const kv::WriteOp& op) { return sum + op.length; });
      TransferFigure figure{block, pattern, static_cast<int64_t>(ops.size()), 0};
      for (int repetition = 0; repetition <= options.repetitions; ++repetition) {  // the first run warms up
        auto start = Clock::now();
        RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<kv::TransferHandle> handle, engine->submit_writes(reader, ops));
        RECGPT_RETURN_IF_ERROR(handle->wait(start + kStepTimeout));
        double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        if (repetition > 0) figure.bytes_per_second = std::max(figure.bytes_per_second, bytes / seconds);
      }
      report.figures.push_back(figure);
    }
  }
  peer.close_stdin();
  (void)peer.wait(Clock::now() + kStepTimeout);
  return report;
}

const char* pattern_name(OpPattern pattern) {
  switch (pattern) {
    case OpPattern::kRepeated: return "repeated";
    case OpPattern::kPerBlock: return "per_block";
    case OpPattern::kCoalesced: return "coalesced";
  }
  return "?";
}

std::string transfer_bench_report_text(const TransferBenchReport& report) {
  std::string text = "backend " + report.backend + ", tls " + (report.tls.empty() ? "(UCX's choice)" : report.tls) +
                     ", two processes\n";
  char line[256];
  for (const TransferFigure& figure : report.figures) {
    std::snprintf(line, sizeof(line), "block %8ld B, %-9s %7ld ops: %8.3f GB/s\n",
                  static_cast<long>(figure.block_bytes), pattern_name(figure.pattern), static_cast<long>(figure.ops),
                  figure.bytes_per_second / 1e9);
    text += line;
  }
  return text;
}

std::string transfer_bench_report_json(const TransferBenchReport& report) {
  nlohmann::json json = {{"backend", report.backend}, {"tls", report.tls}, {"figures", nlohmann::json::array()}};
  for (const TransferFigure& figure : report.figures) {
    json["figures"].push_back({{"block_bytes", figure.block_bytes},
                               {"pattern", pattern_name(figure.pattern)},
                               {"ops", figure.ops},
                               {"bytes_per_second", figure.bytes_per_second}});
  }
  return json.dump(2);
}

}  // namespace recgpt
