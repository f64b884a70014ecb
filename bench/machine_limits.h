// This machine's limits, measured in the same run as a benchmark so that results can be reported as fractions
// of them (shared VMs vary ±15% from run to run). Each call takes a fraction of a second to a few seconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/huge_page_memory.h"
#include "engine/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace recgpt {

// Read bandwidth from memory in bytes/s: every thread sums its share of a `bytes` buffer with vector loads
// (AVX-512, else AVX2); median of 5 passes.
double measure_read_bandwidth_bytes_per_second(ThreadPool& pool, size_t bytes = size_t{1} << 30);

// Memory a benchmark already holds, e.g. one weight tensor where the model is mapped.
struct MemoryRegion {
  const void* data;
  size_t bytes;
};

// measure_read_bandwidth_bytes_per_second's read, one timed pass at a time, over its own buffer or memory a
// benchmark holds: for a benchmark that takes its passes in turns with its own work so that both see the same
// phases of a shared host (whose bandwidth moves by tens of percent within seconds).
class ReadProbe {
 public:
  // Its own buffer of `bytes` on 2 MiB pages, first touched by the threads that read it.
  static ReadProbe of_new_buffer(ThreadPool& pool, size_t bytes);
  // `regions` where they are, from each one's first 64-byte boundary in whole 512-byte blocks (the bytes counted
  // are those read); the pool must outlive the probe and the regions stay valid. Where memory is not uniform (on
  // shared VMs, how fast a page reads depends on where the host placed it: a model file's page cache measured
  // 0.45-1.0 of a fresh buffer's rate from one eviction to the next), this is the rate at which exactly those
  // bytes can be read.
  static ReadProbe of_regions(ThreadPool& pool, std::span<const MemoryRegion> regions);

  // Bytes/s of one pass over all of it, every pool thread summing one contiguous share.
  double pass() const;
  // The median of `passes` passes.
  double median(int passes = 5) const;

 private:
  struct Block {  // 64-byte aligned whole 512-byte blocks of one region, and where they start in the whole
    const float* data;
    size_t begin;
    size_t count;
  };
  ThreadPool* pool_ = nullptr;
  HugePageMemory buffer_;  // of_new_buffer's
  std::vector<Block> blocks_;
  size_t total_ = 0;  // floats
};

// FLOP/s of matmul() (engine/cpu/matmul.h) with x [m, k] and weights [n, k] of `dtype` (f32 at m >= 16 is
// OpenBLAS sgemm, bf16 is our kernel); the best of repeated runs over at least 0.3 s.
double measure_gemm_flops(ThreadPool& pool, DType dtype, int64_t m, int64_t n, int64_t k);

// Peak FLOP/s of VDPBF16PS (2 x 32 FLOP per 512-bit instruction) on all threads with independent accumulators;
// 0 when the CPU lacks AVX512_BF16.
double bf16_dot_peak_flops(ThreadPool& pool);

// Peak FLOP/s of f32 FMA on all threads with independent accumulators (512-bit, or 256-bit without AVX-512).
double fma_peak_flops(ThreadPool& pool);

}  // namespace recgpt
