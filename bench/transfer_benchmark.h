// `recgpt bench transfer`: KV block writes between two processes of this machine through one TransferEngine
// backend, per block size: one block written repeatedly (ucx_perftest's work), and a KV-like mapping as one op per
// block and as the coalesced ops the KV layout helper makes of runs of adjacent blocks. The second process is this
// binary again (`recgpt bench transfer --serve`), holding the destination region. bench/transfer_bench.py runs it next
// to ucx_perftest on the same transport and sizes and reports the ratio.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace recgpt {

struct TransferBenchOptions {
  std::string backend = "ucx";
  std::string tls;  // UCX_TLS for both processes: "tcp", "sm", ...; empty: UCX's choice
  std::vector<int64_t> block_bytes = {4096, 65536, 1 << 20};
  int64_t bytes_per_run = int64_t{256} << 20;  // written per timed run (and the size of both regions)
  int64_t blocks_per_run = 16;                 // adjacent blocks per run of the mapping (what coalescing merges)
  int repetitions = 3;                         // timed runs per figure; the best is kept
  int writer_cpu = -1;                         // pin this process (and its threads) to a CPU; -1: no pinning
  int peer_cpu = -1;                           // pin the peer process to a CPU; -1: no pinning
  std::string self_path;                       // this binary, to start the peer
};

// How a timed run's ops lie: the same block written over and over (the work ucx_perftest measures: cache-resident
// buffers), or a KV-like mapping over the whole regions (from memory) with one op per block or the coalesced ops.
enum class OpPattern { kRepeated, kPerBlock, kCoalesced };

struct TransferFigure {
  int64_t block_bytes = 0;
  OpPattern pattern = OpPattern::kPerBlock;
  int64_t ops = 0;  // write ops per timed run
  double bytes_per_second = 0;
};

struct TransferBenchReport {
  std::string backend;
  std::string tls;
  std::vector<TransferFigure> figures;
};

Result<TransferBenchReport> run_transfer_bench(const TransferBenchOptions& options);
// The peer: registers a region of `bytes`, prints "endpoint <hex> <key hex>" and serves until stdin closes.
int serve_transfer_bench_peer(const TransferBenchOptions& options);

std::string transfer_bench_report_text(const TransferBenchReport& report);
std::string transfer_bench_report_json(const TransferBenchReport& report);

}  // namespace recgpt
