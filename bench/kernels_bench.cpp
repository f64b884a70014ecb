// Microbenchmark of the CPU kernels on Qwen3-0.6B's shapes, as fractions of this machine's limits measured in
// the same run. Not run by CI.
// Usage: recgpt_kernels_bench [threads] [matmul|decode|attention|kv_reads|ops|sampling|pool]...
// GCC 12's AVX-512 intrinsics initialise their "undefined" vectors from themselves (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/machine_limits.h"
#include "common/huge_page_memory.h"
#include "common/status.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/cpu_features.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/openblas_setup.h"
#include "engine/cpu/ops.h"
#include "engine/cpu/tiled_weights.h"
#include "engine/sampler.h"
#include "engine/token_logprobs.h"

namespace recgpt {
namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int64_t n;
  int64_t k;
};
constexpr Shape kShapes[] = {{"q_proj", 2048, 1024},  {"k_proj", 1024, 1024},    {"o_proj", 1024, 2048},
                             {"gate_up", 3072, 1024}, {"down_proj", 1024, 3072}, {"lm_head", 151936, 1024}};

// Median seconds of `run` over at least 0.3 s (and 5 calls); `run(i)` gets the call index.
double median_seconds(const std::function<void(int64_t)>& run) {
  std::vector<double> times;
  auto begin = Clock::now();
  for (int64_t i = 0; i < 5 || std::chrono::duration<double>(Clock::now() - begin).count() < 0.3; ++i) {
    auto start = Clock::now();
    run(i);
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

std::vector<float> random_floats(int64_t count, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(count);
  for (float& value : values) value = uniform(random);
  return values;
}

// Enough copies of a random weight matrix that cycling through them reads from memory, not from the L3 cache.
struct WeightSet {
  std::vector<std::vector<uint16_t>> storage;
  std::vector<WeightMatrix> copies;
};

WeightSet make_weights(DType dtype, int64_t n, int64_t k, size_t min_total_bytes) {
  WeightSet set;
  size_t bytes = n * k * dtype_size(dtype);
  size_t num_copies = std::max<size_t>(1, (min_total_bytes + bytes - 1) / bytes);
  std::vector<float> values = random_floats(n * k, 1);
  for (size_t c = 0; c < num_copies; ++c) {
    std::vector<uint16_t> storage(bytes / sizeof(uint16_t));
    if (dtype == DType::kBF16) {
      for (int64_t i = 0; i < n * k; ++i) storage[i] = f32_to_bf16(values[i]);
    } else {
      std::copy(values.begin(), values.end(), reinterpret_cast<float*>(storage.data()));
    }
    set.storage.push_back(std::move(storage));
  }
  const bool tiled = tiled_layout_supported(dtype, n, k);
  for (auto& storage : set.storage) {
    if (tiled) {
      std::vector<uint16_t> packed(storage.size());
      pack_tiles(storage.data(), dtype_size(dtype), k, 0, n / kWeightTileRows, packed.data());
      storage = std::move(packed);
    }
    set.copies.push_back({dtype, storage.data(), n, k, tiled ? WeightLayout::kTiled : WeightLayout::kRowMajor});
  }
  return set;
}

void bench_matmuls(ThreadPool& pool, double bandwidth, double bf16_peak, double fma_peak) {
  std::printf("\n%-10s %-5s %5s %10s %10s %9s %10s %9s\n", "matmul", "dtype", "m", "us/call", "W GB/s", "of bw",
              "GFLOP/s", "of peak");
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (const Shape& shape : kShapes) {
      WeightSet weights = make_weights(dtype, shape.n, shape.k, size_t{1} << 30);
      for (int64_t m : {1, 2, 3, 4, 6, 8, 12, 16, 32, 512}) {
        if (shape.n > 100000 && m > 32) continue;
        std::vector<float> x = random_floats(m * shape.k, 2), y(m * shape.n);
        double seconds = median_seconds(
            [&](int64_t i) { matmul(pool, x.data(), m, weights.copies[i % weights.copies.size()], y.data()); });
        // Both limits: small m is bound by reading W, large m by the multiply-adds.
        const double read_rate = shape.n * shape.k * dtype_size(dtype) / seconds;
        const double flop_rate = 2.0 * m * shape.n * shape.k / seconds;
        const double peak = dtype == DType::kBF16 ? bf16_peak : fma_peak;
        std::printf("%-10s %-5s %5ld %10.1f %10.1f %9.2f %10.1f %9.2f\n", shape.name, dtype_name(dtype).data(), m,
                    seconds * 1e6, read_rate / 1e9, read_rate / bandwidth, flop_rate / 1e9, flop_rate / peak);
      }
    }
  }
}

// The matmuls of one decode token of Qwen3-0.6B (28 layers, distinct weights, then the LM head).
void bench_decode_token(ThreadPool& pool, DType dtype, double bandwidth) {
  std::vector<WeightSet> layers;
  size_t bytes = 0;
  for (int layer = 0; layer < 28; ++layer) {
    for (const Shape& shape : kShapes) {
      if (shape.n > 100000) continue;
      int repeat = shape.name[0] == 'k' || shape.name[0] == 'g' ? 2 : 1;  // k and v; gate and up
      for (int r = 0; r < repeat; ++r) {
        layers.push_back(make_weights(dtype, shape.n, shape.k, 0));
        bytes += shape.n * shape.k * dtype_size(dtype);
      }
    }
  }
  layers.push_back(make_weights(dtype, 151936, 1024, 0));
  bytes += 151936 * 1024 * dtype_size(dtype);
  std::vector<float> x = random_floats(3072, 3), y(151936);
  double seconds = median_seconds([&](int64_t) {
    for (const WeightSet& w : layers) matmul(pool, x.data(), 1, w.copies[0], y.data());
  });
  std::printf("\ndecode token matmuls %s: %.2f ms, %.2f GB read, %.1f GB/s = %.2f of read bandwidth (%.1f tokens/s)\n",
              dtype_name(dtype).data(), seconds * 1e3, bytes / 1e9, bytes / seconds / 1e9, bytes / seconds / bandwidth,
              1.0 / seconds);
}

void bench_attention(ThreadPool& pool, DType dtype, double bandwidth, double fma_peak) {
  const int num_heads = 16, kv_heads = 8, head_dim = 128, block_size = 16;
  const int num_blocks = 32 * 1024 / block_size + 64;
  // On 2 MiB pages, as the engine's KV pool (KvCache): with 4 KiB pages the prefetchers stop at every page. Sized
  // for f32 elements, so that either dtype fits.
  const size_t pool_bytes = size_t{1} * num_blocks * block_size * kv_heads * head_dim * sizeof(float);
  HugePageMemory key = HugePageMemory::allocate(pool_bytes).value();
  HugePageMemory value = HugePageMemory::allocate(pool_bytes).value();
  std::vector<float> fill = random_floats(kv_heads * head_dim, 4);
  KvLayerView kv{key.data(), value.data(), dtype, block_size, kv_heads, head_dim};
  for (int64_t slot = 0; slot < int64_t{num_blocks} * block_size; ++slot) {
    store_kv(pool, kv, &slot, fill.data(), fill.data(), 1);
  }
  std::vector<int32_t> table(num_blocks);
  for (int b = 0; b < num_blocks; ++b) table[b] = (b * 7919) % num_blocks;  // scattered blocks

  // Prefill: one sequence of 512 new tokens.
  std::vector<float> queries = random_floats(512 * num_heads * head_dim, 5), output(queries.size());
  AttentionSequence prefill{queries.data(), output.data(), 512, 0, table};
  double seconds = median_seconds([&](int64_t) { paged_attention(pool, kv, {&prefill, 1}, num_heads, 0.088f); });
  double flops = 4.0 * 512 * 513 / 2 * head_dim * num_heads;
  std::printf("attention %s prefill 512: %.2f ms, %.1f GFLOP/s = %.2f of FMA peak\n", dtype_name(dtype).data(),
              seconds * 1e3, flops / seconds / 1e9, flops / seconds / fma_peak);

  // Decode: 32 sequences of `context` cached tokens each (the engine bench's decode runs at ~32). Successive
  // runs take disjoint blocks while the pool has them, so that, as in a model's step (one layer after another),
  // the KV comes from DRAM rather than from the previous run's cache.
  for (int context : {1024, 32}) {
    const int blocks_per_sequence = (context + block_size - 1) / block_size;
    const int num_batches = std::max(1, num_blocks / (32 * blocks_per_sequence));
    std::vector<std::vector<AttentionSequence>> batches(num_batches);
    for (int b = 0; b < num_batches; ++b) {
      for (int s = 0; s < 32; ++s) {
        std::span<const int32_t> blocks(table.data() + (b * 32 + s) * blocks_per_sequence, blocks_per_sequence);
        batches[b].push_back({queries.data() + s * num_heads * head_dim, output.data() + s * num_heads * head_dim, 1,
                              context - 1, blocks});
      }
    }
    // bf16 pools also run without AVX512_BF16, so on the f32 kernel (attention.h, uses_bf16_decode_attention).
    const bool both_kernels = dtype == DType::kBF16 && cpu_features().avx512_bf16;
    for (bool bf16_kernel : {true, false}) {
      if (!bf16_kernel && !both_kernels) continue;
      std::optional<CpuFeatures> narrowed;
      if (!bf16_kernel) narrowed = CpuFeatures{true, true, false, false};
      set_cpu_features_for_testing(narrowed);
      seconds =
          median_seconds([&](int64_t i) { paged_attention(pool, kv, batches[i % num_batches], num_heads, 0.088f); });
      set_cpu_features_for_testing(std::nullopt);
      double bytes = 32.0 * context * kv_heads * head_dim * 2 * dtype_size(dtype);
      std::printf("attention %s decode 32 x %d%s: %.3f ms, %.1f GB/s KV = %.2f of read bandwidth\n",
                  dtype_name(dtype).data(), context, bf16_kernel ? "" : " (f32 kernel)", seconds * 1e3,
                  bytes / seconds / 1e9, bytes / seconds / bandwidth);
    }
  }
}

// The sum of a block of `slots` slots of kSlotBytes, one AVX-512 load per 64-byte line: in address order, or
// head by head (per chunk of 16 slots, each head's rows of kRowBytes, a slot apart, as the f32 decode kernels
// read a chunk).
constexpr int64_t kSlotBytes = 2048, kHeads = 8, kRowBytes = kSlotBytes / kHeads, kChunkSlots = 16;
__attribute__((target("avx512f"))) float sum_block(const char* block, int64_t slots, bool head_major) {
  __m512 sum = _mm512_setzero_ps();
  if (!head_major) {
    for (int64_t byte = 0; byte < slots * kSlotBytes; byte += 64)
      sum = _mm512_add_ps(sum, _mm512_load_ps(block + byte));
    return _mm512_reduce_add_ps(sum);
  }
  for (int64_t chunk = 0; chunk < slots; chunk += kChunkSlots) {
    for (int64_t head = 0; head < kHeads; ++head) {
      for (int64_t slot = chunk; slot < chunk + kChunkSlots; ++slot) {
        const char* row = block + slot * kSlotBytes + head * kRowBytes;
        for (int64_t byte = 0; byte < kRowBytes; byte += 64) sum = _mm512_add_ps(sum, _mm512_load_ps(row + byte));
      }
    }
  }
  return _mm512_reduce_add_ps(sum);
}

// How fast a KV pool's access pattern can stream, without any arithmetic: random blocks of 2 KiB slots (Qwen3-0.6B's
// bf16 K rows, 8 kv heads x 128, side by side per slot), every line read once, per block in address order or head
// by head. Each thread takes a contiguous share of the blocks, as attention's items do.
void bench_kv_reads(ThreadPool& pool, double bandwidth) {
  if (!cpu_features().avx512) return;
  const int64_t pool_bytes = int64_t{1} << 30;
  HugePageMemory memory = HugePageMemory::allocate(pool_bytes).value();  // as the engine's KV pool
  RECGPT_CHECK(memory.commit().is_ok());                                 // faulted in (zeroed) before any pass is timed
  const auto* base = reinterpret_cast<const char*>(memory.data());
  for (int64_t slots : {16, 64, 128}) {
    const int64_t block_bytes = slots * kSlotBytes, num_blocks = pool_bytes / block_bytes;
    std::vector<int64_t> blocks(num_blocks);
    for (int64_t b = 0; b < num_blocks; ++b) blocks[b] = b;
    std::shuffle(blocks.begin(), blocks.end(), std::mt19937(7));
    for (bool head_major : {false, true}) {
      if (head_major && slots != 16) continue;
      std::atomic<float> sink{0};
      const double seconds = median_seconds([&](int64_t) {
        pool.parallel_for(num_blocks, [&](int64_t begin, int64_t end) {
          float sum = 0;
          for (int64_t b = begin; b < end; ++b) sum += sum_block(base + blocks[b] * block_bytes, slots, head_major);
          sink.store(sum, std::memory_order_relaxed);
        });
      });
      std::printf("kv reads, random blocks of %3ld slots x 2 KiB, %s: %.1f GB/s = %.2f of read bandwidth\n",
                  static_cast<long>(slots), head_major ? "head by head    " : "in address order",
                  pool_bytes / seconds / 1e9, pool_bytes / seconds / bandwidth);
    }
  }
}

void bench_ops(ThreadPool& pool) {
  std::vector<float> x = random_floats(512 * 3072, 6), y = random_floats(512 * 3072, 7), weight(1024, 1.0f);
  std::vector<int32_t> positions(512);
  for (int i = 0; i < 512; ++i) positions[i] = i;
  for (int64_t tokens : {1, 512}) {
    double norm =
        median_seconds([&](int64_t) { rms_norm(pool, x.data(), weight.data(), tokens, 1024, 1e-6f, y.data()); });
    RopeAngles angles;
    rope_angles(pool, positions.data(), tokens, 128, 1e6, angles);
    double rope = median_seconds([&](int64_t) { rope_rotate_half(pool, x.data(), angles, 16); });
    std::vector<float> out(tokens * 3072);
    double silu = median_seconds([&](int64_t) { silu_mul(pool, x.data(), y.data(), tokens * 3072, out.data()); });
    double add = median_seconds([&](int64_t) { add_inplace(pool, x.data(), y.data(), tokens * 1024); });
    std::printf("ops %3ld tokens: rms_norm %.1f us, rope(q) %.1f us, silu_mul %.1f us, add %.1f us\n", tokens,
                norm * 1e6, rope * 1e6, silu * 1e6, add * 1e6);
  }
}

// One sequence's sampling from a row of Qwen3's vocabulary (600 previous tokens), on one thread, in each mode;
// against reading the row once at the measured bandwidth. Logits ~ N(0, 3²), and for top-p also a flat row
// (uniform over ±3), whose nucleus holds most of the vocabulary.
void bench_sampling(double bandwidth) {
  constexpr int64_t kVocab = 151936;
  std::vector<float> row(kVocab), flat = random_floats(kVocab, 9), logits(kVocab);
  for (float& logit : flat) logit *= 3.0f;
  std::mt19937 random(10);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float& logit : logits) logit = normal(random);
  std::vector<int32_t> previous(600);
  for (size_t i = 0; i < previous.size(); ++i) previous[i] = static_cast<int32_t>((i * 7919) % kVocab);
  struct Mode {
    const char* name;
    SamplingParams params;
    const std::vector<float>* logits;
  };
  const Mode modes[] = {{"greedy", {}, &logits},
                        {"temperature 0.7", {.temperature = 0.7f}, &logits},
                        {"temperature 0.7, top_k 50", {.temperature = 0.7f, .top_k = 50}, &logits},
                        {"temperature 0.7, top_p 0.9", {.temperature = 0.7f, .top_p = 0.9f}, &logits},
                        {"temperature 0.7, top_p 0.9, penalty 1.1",
                         {.temperature = 0.7f, .top_p = 0.9f, .repetition_penalty = 1.1f},
                         &logits},
                        {"temperature 0.7, top_p 0.9, flat row", {.temperature = 0.7f, .top_p = 0.9f}, &flat},
                        // The last 300 previous tokens generated: OpenAI's penalties count them.
                        {"greedy, frequency and presence penalties",
                         {.frequency_penalty = 0.5f, .presence_penalty = 0.5f, .first_draw = 300},
                         &logits}};
  const double read_seconds = static_cast<double>(kVocab * sizeof(float)) / bandwidth;
  for (const auto& [name, params, source] : modes) {
    Sampler sampler(params);
    int64_t sink = 0;
    const double seconds = median_seconds([&](int64_t) {
      std::copy(source->begin(), source->end(), row.begin());
      sink += sampler.sample(row, previous);
    });
    std::printf("sampling, %-40s %7.1f us a row (copy in included), %5.1f x the row's read time (%ld)\n", name,
                seconds * 1e6, seconds / read_seconds, static_cast<long>(sink % 10));
  }
  // What a sequence asking for logprobs adds to its sampling: the raw row's copy and log-sum-exp, then its token's
  // logprob and the 20 most likely.
  LogprobRecorder recorder;
  int64_t sink = 0;
  const double seconds = median_seconds([&](int64_t) {
    recorder.record(logits);
    sink += recorder.read(static_cast<int32_t>(sink % kVocab), SamplingParams::kMaxTopLogprobs).top.front().token;
  });
  std::printf("logprobs, %-40s %7.1f us a row, %5.1f x the row's read time (%ld)\n", "record, then read with top 20",
              seconds * 1e6, seconds / read_seconds, static_cast<long>(sink % 10));
}

// Cost of one parallel_for with trivial tasks, back to back (decode issues ~200 of them per token).
void bench_pool(ThreadPool& pool) {
  std::atomic<int64_t> sink{0};
  double seconds = median_seconds([&](int64_t) {
    for (int i = 0; i < 1000; ++i) {
      pool.parallel_for(pool.num_threads(), [&](int64_t begin, int64_t end) { sink.fetch_add(end - begin); });
    }
  });
  std::printf("parallel_for of %d trivial tasks: %.2f us per call\n", pool.num_threads(), seconds / 1000 * 1e6);
}

int run(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(threads);
  CpuFeatures features = cpu_features();
  std::printf("threads %d, avx2 %d, avx512 %d, avx512_bf16 %d, OpenBLAS core %s\n", threads, features.avx2_fma,
              features.avx512, features.avx512_bf16, openblas_core_name().c_str());
  auto wanted = [&](std::string_view section) {
    if (argc <= 2) return true;
    for (int i = 2; i < argc; ++i) {
      if (section == argv[i]) return true;
    }
    return false;
  };
  double bandwidth = measure_read_bandwidth_bytes_per_second(pool);
  double bf16_peak = bf16_dot_peak_flops(pool);
  double fma_peak = fma_peak_flops(pool);
  std::printf("limits: read bandwidth %.1f GB/s, VDPBF16PS peak %.0f GFLOP/s, FMA peak %.0f GFLOP/s\n", bandwidth / 1e9,
              bf16_peak / 1e9, fma_peak / 1e9);
  if (wanted("matmul")) bench_matmuls(pool, bandwidth, bf16_peak, fma_peak);
  if (wanted("decode")) {
    bench_decode_token(pool, DType::kBF16, bandwidth);
    bench_decode_token(pool, DType::kF32, bandwidth);
  }
  if (wanted("attention")) {
    std::printf("\n");
    bench_attention(pool, DType::kBF16, bandwidth, fma_peak);
    bench_attention(pool, DType::kF32, bandwidth, fma_peak);
  }
  if (wanted("ops")) bench_ops(pool);
  if (wanted("kv_reads")) bench_kv_reads(pool, bandwidth);
  if (wanted("sampling")) bench_sampling(bandwidth);
  if (wanted("pool")) bench_pool(pool);
  std::printf("limits after: read bandwidth %.1f GB/s\n", measure_read_bandwidth_bytes_per_second(pool) / 1e9);
  return 0;
}

}  // namespace
}  // namespace recgpt

int main(int argc, char** argv) { return recgpt::run(argc, argv); }
