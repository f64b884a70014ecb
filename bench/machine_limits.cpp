#include "bench/machine_limits.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/huge_page_memory.h"
#include "common/status.h"
#include "engine/cpu/cpu_features.h"
#include "engine/cpu/matmul.h"

namespace recgpt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Sums of 32-bit words with integer adds, so that any contents (weights read as words) cost the same.
__attribute__((target("avx512f"))) float read_sum_avx512(const float* data, size_t count) {
  __m512i acc[8];
  for (auto& a : acc) a = _mm512_setzero_si512();
  for (size_t i = 0; i + 128 <= count; i += 128) {
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_add_epi32(acc[j], _mm512_load_si512(data + i + 16 * j));
  }
  for (int j = 1; j < 8; ++j) acc[0] = _mm512_add_epi32(acc[0], acc[j]);
  return static_cast<float>(_mm512_reduce_add_epi32(acc[0]));
}

__attribute__((target("avx2"))) float read_sum_avx2(const float* data, size_t count) {
  __m256i acc[8];
  for (auto& a : acc) a = _mm256_setzero_si256();
  for (size_t i = 0; i + 64 <= count; i += 64) {
    for (int j = 0; j < 8; ++j) {
      acc[j] = _mm256_add_epi32(acc[j], _mm256_load_si256(reinterpret_cast<const __m256i*>(data + i + 8 * j)));
    }
  }
  for (int j = 1; j < 8; ++j) acc[0] = _mm256_add_epi32(acc[0], acc[j]);
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
  uint32_t sum = 0;  // wraps
  for (uint32_t lane : lanes) sum += lane;
  return static_cast<float>(sum);
}

constexpr int kPeakAccumulators = 12;  // covers latency x throughput of both instructions on Zen 4 and Intel

__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_loop(int64_t iterations) {
  __m512 acc[kPeakAccumulators];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (auto& c : acc) c = _mm512_dpbf16_ps(c, a, b);
    __asm__ volatile("" : "+v"(a), "+v"(b));  // keep the operands opaque so the loop is not folded
  }
  for (int j = 1; j < kPeakAccumulators; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iterations) {
  __m512 acc[kPeakAccumulators];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (auto& c : acc) c = _mm512_fmadd_ps(a, b, c);
    __asm__ volatile("" : "+v"(a), "+v"(b));
  }
  for (int j = 1; j < kPeakAccumulators; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iterations) {
  __m256 acc[kPeakAccumulators];
  for (auto& a : acc) a = _mm256_setzero_ps();
  __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (auto& c : acc) c = _mm256_fmadd_ps(a, b, c);
    __asm__ volatile("" : "+x"(a), "+x"(b));
  }
  for (int j = 1; j < kPeakAccumulators; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc[0]);
  return lanes[0];
}

std::atomic<float> sink{0};

// Floats read_sum_* take per iteration (512 bytes); they ignore a shorter tail.
constexpr size_t kReadBlockFloats = 128;

float read_sum(const float* data, size_t count) {
  return cpu_features().avx512 ? read_sum_avx512(data, count) : read_sum_avx2(data, count);
}

// FLOP/s of `loop` run by every thread at once; best of 3.
double peak_flops(ThreadPool& pool, float (*loop)(int64_t), double flops_per_iteration) {
  constexpr int64_t kIterations = 20'000'000;
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    auto start = Clock::now();
    pool.parallel_for(pool.num_threads(), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) sink.store(loop(kIterations), std::memory_order_relaxed);
    });
    best = std::max(best, pool.num_threads() * kIterations * flops_per_iteration / seconds_since(start));
  }
  return best;
}

}  // namespace

ReadProbe ReadProbe::of_new_buffer(ThreadPool& pool, size_t bytes) {
  const size_t count = bytes / sizeof(float) / 1024 * 1024;
  // On 2 MiB pages, as the weights are (mapped, or repacked at load): on 4 KiB pages the same read measured ~20%
  // slower than the weights on 2 MiB pages (67 vs 81 GB/s), and a limit the workload beats is not one.
  Result<HugePageMemory> buffer = HugePageMemory::allocate(count * sizeof(float));
  RECGPT_CHECK_MSG(buffer.is_ok(), buffer.status().message());
  auto* data = reinterpret_cast<float*>(buffer->data());
  const int64_t num_tasks = pool.num_threads();
  const size_t per_task = count / num_tasks / 1024 * 1024;
  pool.parallel_for(num_tasks, [&](int64_t begin, int64_t end) {  // first touch by the reading thread
    for (int64_t t = begin; t < end; ++t) std::fill(data + t * per_task, data + (t + 1) * per_task, 1.0f);
  });
  const MemoryRegion region{data, per_task * num_tasks * sizeof(float)};
  ReadProbe probe = of_regions(pool, std::span(&region, 1));
  probe.buffer_ = std::move(*buffer);
  return probe;
}

ReadProbe ReadProbe::of_regions(ThreadPool& pool, std::span<const MemoryRegion> regions) {
  ReadProbe probe;
  probe.pool_ = &pool;
  for (const MemoryRegion& region : regions) {
    const auto start = (reinterpret_cast<uintptr_t>(region.data) + 63) & ~uintptr_t{63};
    const uintptr_t end = reinterpret_cast<uintptr_t>(region.data) + region.bytes;
    if (end <= start) continue;
    const size_t count = (end - start) / sizeof(float) / kReadBlockFloats * kReadBlockFloats;
    if (count == 0) continue;
    probe.blocks_.push_back({reinterpret_cast<const float*>(start), probe.total_, count});
    probe.total_ += count;
  }
  return probe;
}

double ReadProbe::pass() const {
  if (total_ == 0) return 0;
  const int64_t num_tasks = pool_->num_threads();
  auto share_begin = [&](int64_t task) { return total_ * task / num_tasks / kReadBlockFloats * kReadBlockFloats; };
  auto start = Clock::now();
  pool_->parallel_for(num_tasks, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const size_t from = share_begin(task), to = task + 1 == num_tasks ? total_ : share_begin(task + 1);
      float sum = 0;
      for (const Block& block : blocks_) {
        const size_t first = std::max(from, block.begin), last = std::min(to, block.begin + block.count);
        if (first < last) sum += read_sum(block.data + (first - block.begin), last - first);
      }
      sink.store(sum, std::memory_order_relaxed);
    }
  });
  return static_cast<double>(total_ * sizeof(float)) / seconds_since(start);
}

double ReadProbe::median(int passes) const {
  std::vector<double> rates;
  for (int i = 0; i < passes; ++i) rates.push_back(pass());
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

double measure_read_bandwidth_bytes_per_second(ThreadPool& pool, size_t bytes) {
  return ReadProbe::of_new_buffer(pool, bytes).median();
}

double measure_gemm_flops(ThreadPool& pool, DType dtype, int64_t m, int64_t n, int64_t k) {
  std::mt19937 random(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(m * k), y(m * n);
  for (float& value : x) value = uniform(random);
  std::vector<float> weights_f32;
  std::vector<uint16_t> weights_bf16;
  const void* weights;
  if (dtype == DType::kF32) {
    weights_f32.resize(n * k);
    for (float& value : weights_f32) value = uniform(random);
    weights = weights_f32.data();
  } else {
    weights_bf16.resize(n * k);
    for (uint16_t& value : weights_bf16) value = f32_to_bf16(uniform(random));
    weights = weights_bf16.data();
  }
  WeightMatrix w{dtype, weights, n, k};
  matmul(pool, x.data(), m, w, y.data());  // warm up
  double best = 0;
  auto begin = Clock::now();
  for (int runs = 0; runs < 3 || seconds_since(begin) < 0.3; ++runs) {
    auto start = Clock::now();
    matmul(pool, x.data(), m, w, y.data());
    best = std::max(best, 2.0 * m * n * k / seconds_since(start));
  }
  return best;
}

double bf16_dot_peak_flops(ThreadPool& pool) {
  if (!cpu_features().avx512_bf16) return 0;
  return peak_flops(pool, &bf16_dot_loop, kPeakAccumulators * 64.0);
}

double fma_peak_flops(ThreadPool& pool) {
  if (cpu_features().avx512) return peak_flops(pool, &fma_loop_avx512, kPeakAccumulators * 32.0);
  return peak_flops(pool, &fma_loop_avx2, kPeakAccumulators * 16.0);
}

}  // namespace recgpt
