// `recgpt bench engine`: prefill and decode speed of one model on this machine, each reported as a fraction
// of a limit measured in the same run (noisy shared machines make absolute figures meaningless alone):
//   decode  against memory bandwidth / bytes read per step (weights once per step + the KV it attends over), the
//           bandwidth measured on a fresh buffer and on the weights decode reads themselves;
//   prefill against the GEMM rate of this engine's own matmul on the model's largest projection shape.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace recgpt {

struct EngineBenchOptions {
  std::string model_dir;
  int threads = 0;  // 0: all cores
  int prefill_tokens = 512;
  std::vector<int> decode_batch_sizes = {1, 8, 32};
  int decode_context_tokens = 16;  // prompt of each decoding sequence
  int decode_steps = 32;
  // Rounds of (prefill, each batch size) in turns: prefill keeps its best, decode pools its steps (medians).
  int repetitions = 3;
  bool repack_weights = true;  // BackendOptions::repack_weights
};

struct DecodeFigure {
  int batch_size = 0;
  double tokens_per_second = 0;  // batch_size / the median step's seconds
  double bytes_per_step = 0;
  double read_bandwidth_bytes_per_second = 0;  // median of a fresh buffer's read passes, one before each step
  double roofline_tokens_per_second = 0;       // batch_size * bandwidth / bytes_per_step
  double fraction_of_roofline = 0;
  // The same against the rate at which the weights decode reads themselves read (median of passes, one before
  // each step): what memory placement leaves of the fresh buffer's rate is not the kernels' to win back.
  double weights_read_bandwidth_bytes_per_second = 0;
  double fraction_of_weights_roofline = 0;
};

struct EngineBenchReport {
  std::string model_dir;
  std::string weight_dtype;
  std::string kv_dtype;  // the cache's: bf16 for bf16 weights (attention.h says which kernel decodes it), else f32
  int kv_block_size = 0;
  int threads = 0;
  std::string cpu;  // the kernels' instruction sets and OpenBLAS's kernel set, e.g. "avx512_bf16, OpenBLAS Cooperlake"
  double read_bandwidth_bytes_per_second = 0;          // at the start (median of 5); each decode figure has its own
  double weights_read_bandwidth_bytes_per_second = 0;  // of the weights decode reads, at the start
  double gemm_flops_per_second = 0;                    // engine matmul on [prefill_tokens, k] x [n, k]
  double weight_bytes = 0;
  double weight_bytes_on_huge_pages =
      0;                             // of the mappings holding the weights decode reads, on 2 MiB pages, at the end
  double decode_weight_bytes = 0;    // of the weights, those every decode step reads
  double repacked_weight_bytes = 0;  // of those, read from the backend's own copy (tiled at load)
  double weight_bytes_cache_line_aligned = 0;  // of those, the ones in tensors starting on a cache line
  int prefill_tokens = 0;
  int decode_context_tokens = 0;
  double prefill_tokens_per_second = 0;
  double prefill_flops_per_token = 0;
  double prefill_fraction_of_gemm = 0;
  std::vector<DecodeFigure> decode;
};

Result<EngineBenchReport> run_engine_bench(const EngineBenchOptions& options);

std::string engine_bench_report_text(const EngineBenchReport& report);
std::string engine_bench_report_json(const EngineBenchReport& report);

}  // namespace recgpt
