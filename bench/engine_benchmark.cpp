#include "bench/engine_benchmark.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "bench/machine_limits.h"
#include "engine/backend.h"
#include "engine/cpu/cpu_features.h"
#include "engine/cpu/openblas_setup.h"
#include "engine/cpu/thread_pool.h"
#include "engine/kv_cache.h"
#include "engine/model_cost.h"
#include "engine/model_files.h"

namespace recgpt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The weights a decode step must read whatever the batch, where it reads them: every projection matrix and the
// LM head (the backend's own copy where it keeps one, else the mapped tensors) and the norms.
// `copied`: Backend::decode_weight_memory().
std::vector<MemoryRegion> decode_weight_regions(std::span<const std::span<const std::byte>> copied,
                                                const ModelWeights& weights) {
  std::vector<MemoryRegion> regions;
  auto add = [&](const TensorView& view) { regions.push_back({view.data, view.num_bytes()}); };
  for (std::span<const std::byte> memory : copied) regions.push_back({memory.data(), memory.size()});
  for (const LayerWeights& layer : weights.layers) {
    for (const TensorView* view :
         {&layer.input_layernorm, &layer.q_norm, &layer.k_norm, &layer.post_attention_layernorm}) {
      add(*view);
    }
    if (!copied.empty()) continue;
    for (const TensorView* view : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.gate_proj,
                                   &layer.up_proj, &layer.down_proj}) {
      add(*view);
    }
  }
  add(weights.norm);
  if (copied.empty()) add(weights.lm_head);
  return regions;
}

// Bytes of the regions that start on a cache line (a file from Hugging Face's writer puts every tensor 8-byte
// aligned only, and split loads cost decode ~7%; ours align them, kSafetensorsDataAlignment).
double cache_line_aligned_bytes(std::span<const MemoryRegion> regions) {
  double bytes = 0;
  for (const MemoryRegion& region : regions) {
    if (reinterpret_cast<uintptr_t>(region.data) % 64 == 0) bytes += static_cast<double>(region.bytes);
  }
  return bytes;
}

double total_bytes(std::span<const MemoryRegion> regions) {
  double bytes = 0;
  for (const MemoryRegion& region : regions) bytes += static_cast<double>(region.bytes);
  return bytes;
}

std::vector<int32_t> random_prompt(const ModelConfig& config, int count, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int32_t> pick(0, config.vocab_size - 1);
  std::vector<int32_t> tokens(count);
  int32_t entity = config.entity_adaptor ? config.entity_adaptor->entity_token_id : -1;
  for (int32_t& token : tokens) {
    do token = pick(random);
    while (token == entity);
  }
  return tokens;
}

// Bytes on 2 MiB pages (anonymous or file-backed) of this process's mappings that hold any of `regions`.
double huge_page_bytes_of(std::span<const MemoryRegion> regions) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool holds_region = false;
  double kilobytes = 0;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " ", &begin, &end) == 2 && line.find(':') > line.find(' ')) {
      holds_region = std::any_of(regions.begin(), regions.end(), [&](const MemoryRegion& region) {
        const auto start = reinterpret_cast<uintptr_t>(region.data);
        return start >= begin && start < end;
      });
      continue;
    }
    double value = 0;
    if (holds_region && (std::sscanf(line.c_str(), "AnonHugePages: %lf", &value) == 1 ||
                         std::sscanf(line.c_str(), "FilePmdMapped: %lf", &value) == 1)) {
      kilobytes += value;
    }
  }
  return kilobytes * 1024;
}

std::string cpu_description() {
  CpuFeatures features = cpu_features();
  std::string isa = features.amx_bf16      ? "amx_bf16"
                    : features.avx512_bf16 ? "avx512_bf16"
                    : features.avx512      ? "avx512"
                                           : "avx2";
  return isa + ", OpenBLAS " + openblas_core_name();  // after a ThreadPool configured OpenBLAS
}

// One batch size's decode over all repetitions: the seconds of every step, and the probes' passes taken in turns
// with the steps.
struct DecodeSamples {
  std::vector<double> step_seconds;
  std::vector<double> read_bandwidth;          // bytes/s, a fresh buffer's
  std::vector<double> weights_read_bandwidth;  // bytes/s, of the weights decode reads
  double bytes_per_step = 0;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

class Bench {
 public:
  // `weight_bytes`: what every decode step reads of the weights (decode_weight_regions).
  Bench(const EngineBenchOptions& options, const ModelFiles& model, std::unique_ptr<Backend> backend, KvCache cache,
        double weight_bytes)
      : options_(options),
        model_(model),
        config_(model.config()),
        backend_(std::move(backend)),
        cache_(std::move(cache)),
        logits_(backend_->logits_memory()),
        weight_bytes_(weight_bytes) {}

  // Seconds of one prefill of the prompt.
  Result<double> prefill_seconds() {
    std::vector<int32_t> prompt = random_prompt(config_, options_.prefill_tokens, 1);
    RECGPT_ASSIGN_OR_RETURN(std::vector<int32_t> blocks, blocks_for(options_.prefill_tokens));
    Batch batch;
    batch.sequences.push_back({prompt, {}, 0, blocks, LogitsWanted::kLast});
    auto start = Clock::now();
    Status status = backend_->forward(batch, cache_, logits_);
    double seconds = seconds_since(start);
    cache_.blocks().release(blocks);
    RECGPT_RETURN_IF_ERROR(status);
    return seconds;
  }

  // Runs options.decode_steps decode steps of `batch_size` sequences, each step right after one pass of each
  // probe, and appends the steps' seconds and the passes' rates to `samples`.
  Status decode(int batch_size, const ReadProbe& buffer_probe, const ReadProbe& weights_probe, DecodeSamples& samples) {
    int context = options_.decode_context_tokens;
    int steps = options_.decode_steps;
    std::vector<std::vector<int32_t>> tokens(batch_size);
    std::vector<std::vector<int32_t>> tables(batch_size);
    Batch prefill;
    for (int s = 0; s < batch_size; ++s) {
      tokens[s] = random_prompt(config_, context + steps, 100 + s);
      RECGPT_ASSIGN_OR_RETURN(tables[s], blocks_for(context + steps));
      prefill.sequences.push_back({std::span(tokens[s]).first(context), {}, 0, tables[s], LogitsWanted::kNone});
    }
    RECGPT_RETURN_IF_ERROR(backend_->forward(prefill, cache_, logits_));
    for (int step = 0; step < steps; ++step) {
      Batch batch;
      for (int s = 0; s < batch_size; ++s) {
        batch.sequences.push_back(
            {std::span(tokens[s]).subspan(context + step, 1), {}, context + step, tables[s], LogitsWanted::kLast});
      }
      samples.read_bandwidth.push_back(buffer_probe.pass());
      samples.weights_read_bandwidth.push_back(weights_probe.pass());
      auto start = Clock::now();
      RECGPT_RETURN_IF_ERROR(backend_->forward(batch, cache_, logits_));
      samples.step_seconds.push_back(seconds_since(start));
    }
    for (const auto& table : tables) cache_.blocks().release(table);

    const KvCacheConfig& kv = cache_.config();
    double kv_bytes_per_token = static_cast<double>(kv.bytes_per_block()) / kv.block_size;
    double mean_context = context + (steps - 1) / 2.0;
    samples.bytes_per_step = weight_bytes_ + batch_size * mean_context * kv_bytes_per_token;
    return Status::ok();
  }

 private:
  Result<std::vector<int32_t>> blocks_for(int tokens) {
    int block_size = cache_.config().block_size;
    return cache_.blocks().allocate((tokens + block_size - 1) / block_size);
  }

  const EngineBenchOptions& options_;
  const ModelFiles& model_;
  const ModelConfig& config_;
  std::unique_ptr<Backend> backend_;
  KvCache cache_;
  HostLogits logits_;
  double weight_bytes_;  // read by every decode step
};

}  // namespace

Result<EngineBenchReport> run_engine_bench(const EngineBenchOptions& options) {
  if (options.decode_batch_sizes.empty() || options.decode_steps < 1 || options.repetitions < 1) {
    return invalid_argument("bench engine needs at least one decode batch size, step and repetition");
  }
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::open(options.model_dir));
  const ModelConfig& config = model->config();
  int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  DType weight_dtype = model->weights().layers.at(0).q_proj.dtype;

  EngineBenchReport report;
  report.model_dir = options.model_dir;
  report.weight_dtype = std::string(dtype_name(weight_dtype));
  report.threads = threads;
  report.weight_bytes = static_cast<double>(model->weight_bytes());
  report.prefill_tokens = options.prefill_tokens;
  report.decode_context_tokens = options.decode_context_tokens;
  // The machine's limits drift by tens of percent within seconds on shared hosts, so decode is set against read
  // passes taken in turns with its steps: of a fresh buffer, and of the weights decode reads, where they are
  // (mapped, or the backend's own copy).
  ThreadPool limits_pool(threads);
  report.cpu = cpu_description();
  const ReadProbe buffer_probe = ReadProbe::of_new_buffer(limits_pool, size_t{512} << 20);
  RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                          create_backend("cpu", *model, {threads, options.repack_weights}));
  const std::vector<std::span<const std::byte>> copied = backend->decode_weight_memory();
  for (std::span<const std::byte> memory : copied) report.repacked_weight_bytes += memory.size();
  const std::vector<MemoryRegion> weight_regions = decode_weight_regions(copied, model->weights());
  const ReadProbe weights_probe = ReadProbe::of_regions(limits_pool, weight_regions);
  report.decode_weight_bytes = total_bytes(weight_regions);
  report.weight_bytes_cache_line_aligned = cache_line_aligned_bytes(weight_regions);
  report.read_bandwidth_bytes_per_second = buffer_probe.median();
  report.weights_read_bandwidth_bytes_per_second = weights_probe.median();
  auto gemm_rate = [&] {
    return measure_gemm_flops(limits_pool, weight_dtype, options.prefill_tokens, config.intermediate_size,
                              config.hidden_size);
  };

  int max_batch = *std::max_element(options.decode_batch_sizes.begin(), options.decode_batch_sizes.end());
  int64_t tokens_needed = std::max<int64_t>(
      options.prefill_tokens, int64_t{max_batch} * (options.decode_context_tokens + options.decode_steps));
  KvCacheConfig cache_config{config.num_hidden_layers,
                             config.num_key_value_heads,
                             config.head_dim,
                             16,
                             weight_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32,
                             0};
  cache_config.num_blocks = tokens_needed / cache_config.block_size + max_batch + 1;
  report.kv_dtype = std::string(dtype_name(cache_config.dtype));
  report.kv_block_size = cache_config.block_size;
  RECGPT_ASSIGN_OR_RETURN(KvCache cache, backend->create_kv_cache(cache_config));
  Bench bench(options, *model, std::move(backend), std::move(cache), report.decode_weight_bytes);

  // Repetitions are taken in turns (a prefill, then each batch size), so that every figure, and so the
  // decode/prefill ratio, sees the same phases of the host. Prefill and the GEMM rate keep their best; decode
  // pools the steps of every repetition and takes medians of its steps and of the passes between them.
  double prefill_seconds = 1e30;
  std::vector<DecodeSamples> samples(options.decode_batch_sizes.size());
  for (int repetition = 0; repetition < options.repetitions; ++repetition) {
    report.gemm_flops_per_second = std::max(report.gemm_flops_per_second, gemm_rate());
    RECGPT_ASSIGN_OR_RETURN(double seconds, bench.prefill_seconds());
    prefill_seconds = std::min(prefill_seconds, seconds);
    for (size_t i = 0; i < options.decode_batch_sizes.size(); ++i) {
      RECGPT_RETURN_IF_ERROR(bench.decode(options.decode_batch_sizes[i], buffer_probe, weights_probe, samples[i]));
    }
  }
  for (size_t i = 0; i < options.decode_batch_sizes.size(); ++i) {
    DecodeFigure figure;
    figure.batch_size = options.decode_batch_sizes[i];
    figure.tokens_per_second = figure.batch_size / median(samples[i].step_seconds);
    figure.bytes_per_step = samples[i].bytes_per_step;
    figure.read_bandwidth_bytes_per_second = median(samples[i].read_bandwidth);
    figure.weights_read_bandwidth_bytes_per_second = median(samples[i].weights_read_bandwidth);
    auto roofline = [&](double bandwidth) { return figure.batch_size * bandwidth / figure.bytes_per_step; };
    figure.roofline_tokens_per_second = roofline(figure.read_bandwidth_bytes_per_second);
    figure.fraction_of_roofline = figure.tokens_per_second / figure.roofline_tokens_per_second;
    figure.fraction_of_weights_roofline =
        figure.tokens_per_second / roofline(figure.weights_read_bandwidth_bytes_per_second);
    report.decode.push_back(figure);
  }
  report.weight_bytes_on_huge_pages = huge_page_bytes_of(weight_regions);
  report.prefill_tokens_per_second = options.prefill_tokens / prefill_seconds;
  report.prefill_flops_per_token = decoder_flops_per_token(config, (options.prefill_tokens - 1) / 2.0) +
                                   lm_head_flops(config) / options.prefill_tokens;  // LM head of the last token
  report.prefill_fraction_of_gemm =
      report.prefill_tokens_per_second * report.prefill_flops_per_token / report.gemm_flops_per_second;
  return report;
}

std::string engine_bench_report_text(const EngineBenchReport& report) {
  char line[512];
  std::string text;
  std::snprintf(line, sizeof(line), "model %s (%s weights, %.2f GB; %s KV in blocks of %d), %d threads, %s\n",
                report.model_dir.c_str(), report.weight_dtype.c_str(), report.weight_bytes / 1e9,
                report.kv_dtype.c_str(), report.kv_block_size, report.threads, report.cpu.c_str());
  text += line;
  const double aligned_share = report.weight_bytes_cache_line_aligned / report.decode_weight_bytes;
  std::snprintf(line, sizeof(line),
                "decode reads %.2f GB of weights (%.2f GB repacked at load): %.0f%% on 2 MiB pages, %.0f%% starting on "
                "a cache line%s\n",
                report.decode_weight_bytes / 1e9, report.repacked_weight_bytes / 1e9,
                100 * std::min(1.0, report.weight_bytes_on_huge_pages / report.decode_weight_bytes),
                100 * aligned_share,
                aligned_share < 0.5 ? " (`recgpt realign-model` rewrites the folder aligned)" : "");
  text += line;
  std::snprintf(line, sizeof(line),
                "limits: read bandwidth %.1f GB/s (of the weights decode reads: %.1f GB/s), engine GEMM %.1f GFLOP/s\n",
                report.read_bandwidth_bytes_per_second / 1e9, report.weights_read_bandwidth_bytes_per_second / 1e9,
                report.gemm_flops_per_second / 1e9);
  text += line;
  std::snprintf(line, sizeof(line), "prefill %d tokens: %.1f tokens/s = %.2f of the GEMM rate\n", report.prefill_tokens,
                report.prefill_tokens_per_second, report.prefill_fraction_of_gemm);
  text += line;
  std::snprintf(line, sizeof(line), "decode after %d context tokens per sequence:\n", report.decode_context_tokens);
  text += line;
  for (const DecodeFigure& figure : report.decode) {
    std::snprintf(line, sizeof(line),
                  "decode batch %2d: %7.1f tokens/s = %.2f of the bandwidth roofline (%.1f tokens/s at %.1f GB/s); "
                  "%.2f of reading its weights (at %.1f GB/s)\n",
                  figure.batch_size, figure.tokens_per_second, figure.fraction_of_roofline,
                  figure.roofline_tokens_per_second, figure.read_bandwidth_bytes_per_second / 1e9,
                  figure.fraction_of_weights_roofline, figure.weights_read_bandwidth_bytes_per_second / 1e9);
    text += line;
  }
  if (!report.decode.empty()) {
    std::snprintf(line, sizeof(line), "decode batch %d / prefill rate: %.2f\n", report.decode.back().batch_size,
                  report.decode.back().tokens_per_second / report.prefill_tokens_per_second);
    text += line;
  }
  return text;
}

std::string engine_bench_report_json(const EngineBenchReport& report) {
  nlohmann::json json = {
      {"model_dir", report.model_dir},
      {"weight_dtype", report.weight_dtype},
      {"kv_dtype", report.kv_dtype},
      {"kv_block_size", report.kv_block_size},
      {"threads", report.threads},
      {"cpu", report.cpu},
      {"weight_bytes", report.weight_bytes},
      {"weight_bytes_on_huge_pages", report.weight_bytes_on_huge_pages},
      {"decode_weight_bytes", report.decode_weight_bytes},
      {"repacked_weight_bytes", report.repacked_weight_bytes},
      {"weight_bytes_cache_line_aligned", report.weight_bytes_cache_line_aligned},
      {"read_bandwidth_bytes_per_second", report.read_bandwidth_bytes_per_second},
      {"weights_read_bandwidth_bytes_per_second", report.weights_read_bandwidth_bytes_per_second},
      {"gemm_flops_per_second", report.gemm_flops_per_second},
      {"decode_context_tokens", report.decode_context_tokens},
      {"prefill",
       {{"tokens", report.prefill_tokens},
        {"tokens_per_second", report.prefill_tokens_per_second},
        {"flops_per_token", report.prefill_flops_per_token},
        {"fraction_of_gemm", report.prefill_fraction_of_gemm}}},
  };
  for (const DecodeFigure& figure : report.decode) {
    json["decode"].push_back(
        {{"batch_size", figure.batch_size},
         {"tokens_per_second", figure.tokens_per_second},
         {"bytes_per_step", figure.bytes_per_step},
         {"read_bandwidth_bytes_per_second", figure.read_bandwidth_bytes_per_second},
         {"roofline_tokens_per_second", figure.roofline_tokens_per_second},
         {"fraction_of_roofline", figure.fraction_of_roofline},
         {"weights_read_bandwidth_bytes_per_second", figure.weights_read_bandwidth_bytes_per_second},
         {"fraction_of_weights_roofline", figure.fraction_of_weights_roofline}});
  }
  return json.dump(2);
}

}  // namespace recgpt
