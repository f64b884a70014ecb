// GPU benchmark of the CUDA backend (issue 7), each figure against a limit measured in the same run. Not run by CI;
// built with CUDA, run on the GPU machine (scripts/gpu_check.sh). Prints one JSON object:
//   copy: device-to-device copy bandwidth, bytes read plus written per second (the HBM limit);
//   attention: paged decode attention over batches of long contexts, KV bytes read per second and that over the
//     copy bandwidth;
//   prompt_attention: one prompt's causal attention, the SIMT kernel against the tensor-core one (their time and
//     the tensor-core one's multiply-adds per second);
//   decode: whole decode steps of the model at each batch size (uploads, graph replay, logits download included),
//     tokens/s and the fraction of the roofline batch * copy bandwidth / (weights + KV bytes read per step), and the
//     share of a step's time that downloading its logits takes on its own: into the backend's logits memory (as
//     the steps do), and into pageable memory.
// Usage: recgpt_cuda_bench MODEL_DIR [context_tokens] [steps]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_kernels/device_buffer.h"
#include "cuda_kernels/kernels.h"
#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"

namespace recgpt {
namespace {

using cuda::DeviceBuffer;
using Clock = std::chrono::steady_clock;

void require(const Status& status, const char* what) {
  if (status.is_ok()) return;
  std::fprintf(stderr, "recgpt_cuda_bench: %s: %s\n", what, status.to_string().c_str());
  std::exit(1);
}

template <typename T>
T value_or_exit(Result<T> result, const char* what) {
  require(result.status(), what);
  return std::move(result).value();
}

// Median seconds of `run` over `repetitions` timed calls after two warm-ups, with CUDA events on the null stream.
template <typename Run>
double median_gpu_seconds(int repetitions, Run run) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> seconds;
  for (int i = 0; i < repetitions + 2; ++i) {
    cudaEventRecord(start);
    run();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float milliseconds = 0;
    cudaEventElapsedTime(&milliseconds, start, stop);
    if (i >= 2) seconds.push_back(milliseconds * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  require(cuda_status(cudaGetLastError(), "a timed run"), "timing");
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

double copy_bandwidth() {
  const size_t bytes = size_t{2} << 30;
  DeviceBuffer source = value_or_exit(DeviceBuffer::allocate(bytes), "copy source");
  DeviceBuffer target = value_or_exit(DeviceBuffer::allocate(bytes), "copy target");
  cudaMemset(source.as<void>(), 1, bytes);
  const double seconds = median_gpu_seconds(
      10, [&] { cudaMemcpyAsync(target.as<void>(), source.as<void>(), bytes, cudaMemcpyDeviceToDevice); });
  return 2.0 * static_cast<double>(bytes) / seconds;
}

// A device copy of a host vector.
template <typename T>
DeviceBuffer upload(const std::vector<T>& host) {
  DeviceBuffer buffer = value_or_exit(DeviceBuffer::allocate(std::max<size_t>(1, host.size() * sizeof(T))), "upload");
  cudaMemcpy(buffer.as<void>(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return buffer;
}

// A bf16 cache array of `bytes`, every element 0.0115 (not zero: zeros can run faster than data).
DeviceBuffer filled_cache(size_t bytes) {
  DeviceBuffer cache = value_or_exit(DeviceBuffer::allocate(bytes), "a KV array");
  cudaMemset(cache.as<void>(), 0x3c, bytes);
  return cache;
}

std::vector<float> random_queries(size_t count) {
  std::vector<float> query(count);
  std::mt19937 random(2);
  std::uniform_real_distribution<float> uniform(-1, 1);
  for (float& q : query) q = uniform(random);
  return query;
}

// Qwen3-0.6B's attention over a bf16 cache for one prompt of `rows` tokens from position 0: the SIMT kernel (tiles
// of 4 rows) against the tensor-core one (tiles of 64).
std::string prompt_attention_figure(int rows, int multiprocessors) {
  const int heads = 16, kv_heads = 8, head_dim = 128, block_size = 16;
  const int64_t num_blocks = (rows + block_size - 1) / block_size;
  const size_t cache_bytes = static_cast<size_t>(num_blocks) * block_size * kv_heads * head_dim * sizeof(cuda::bf16);
  DeviceBuffer keys = filled_cache(cache_bytes), values = filled_cache(cache_bytes);
  std::vector<int32_t> tables(num_blocks), context(rows), offsets(rows, 0);
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), std::mt19937(1));
  std::iota(context.begin(), context.end(), 1);
  DeviceBuffer device_tables = upload(tables), device_context = upload(context), device_offsets = upload(offsets);
  DeviceBuffer device_query = upload(random_queries(static_cast<size_t>(rows) * heads * head_dim));
  DeviceBuffer out = value_or_exit(DeviceBuffer::allocate(size_t{2} * rows * heads * head_dim), "out");
  const cuda::AttentionShape shape{{heads, kv_heads, head_dim}, block_size, 1.0f / std::sqrt(128.0f)};
  const cuda::PagedCache cache{keys.as<void>(), values.as<void>(), cuda::CacheType::kBF16};
  auto tiles_of = [rows](int tile_rows) {
    std::pair<std::vector<int32_t>, std::vector<int32_t>> tiles;
    for (int first = 0; first < rows; first += tile_rows) {
      tiles.first.push_back(first);
      tiles.second.push_back(std::min(tile_rows, rows - first));
    }
    return tiles;
  };
  const auto [simt_firsts, simt_counts] = tiles_of(cuda::rows_per_tile(heads / kv_heads));
  const auto [tc_firsts, tc_counts] = tiles_of(cuda::kPromptTileRows);
  const auto simt_tiles = static_cast<int64_t>(simt_firsts.size());
  const cuda::AttentionSplits splits = cuda::attention_splits(simt_tiles, kv_heads, rows, multiprocessors);
  DeviceBuffer simt_first = upload(simt_firsts), simt_count = upload(simt_counts);
  DeviceBuffer tc_first = upload(tc_firsts), tc_count = upload(tc_counts);
  DeviceBuffer split = upload(std::vector<int32_t>{splits.split_tokens});
  DeviceBuffer workspace = value_or_exit(
      DeviceBuffer::allocate(std::max<size_t>(
          1, cuda::attention_workspace_bytes(simt_tiles * simt_counts.front(), heads, head_dim, splits.splits))),
      "workspace");
  const cuda::AttentionRows simt_rows{device_query.as<float>(),
                                      device_context.as<int32_t>(),
                                      device_offsets.as<int32_t>(),
                                      device_tables.as<int32_t>(),
                                      simt_first.as<int32_t>(),
                                      simt_count.as<int32_t>(),
                                      split.as<int32_t>(),
                                      rows,
                                      simt_tiles,
                                      simt_counts.front()};
  const cuda::AttentionRows tc_rows{device_query.as<float>(),
                                    device_context.as<int32_t>(),
                                    device_offsets.as<int32_t>(),
                                    device_tables.as<int32_t>(),
                                    tc_first.as<int32_t>(),
                                    tc_count.as<int32_t>(),
                                    nullptr,
                                    rows,
                                    static_cast<int64_t>(tc_firsts.size()),
                                    tc_counts.front()};
  const double simt_seconds = median_gpu_seconds(10, [&] {
    require(cuda::paged_attention(simt_rows, shape, cache, splits.splits, workspace.as<void>(), out.as<cuda::bf16>(),
                                  nullptr),
            "paged_attention");
  });
  const double tc_seconds = median_gpu_seconds(10, [&] {
    require(cuda::prompt_attention(tc_rows, shape, cache, out.as<cuda::bf16>(), nullptr), "prompt_attention");
  });
  // Multiply-adds: (query, key) pairs of the causal triangle, times heads, times head_dim for Q K^T and for P V.
  const double multiply_adds = 0.5 * rows * (rows + 1.0) * heads * head_dim * 2.0;
  char line[256];
  std::snprintf(line, sizeof(line),
                "{\"rows\": %d, \"simt_seconds\": %.6g, \"tensor_core_seconds\": %.6g, \"speedup\": %.2f, "
                "\"tensor_core_flops\": %.4g}",
                rows, simt_seconds, tc_seconds, simt_seconds / tc_seconds, 2.0 * multiply_adds / tc_seconds);
  return line;
}

// Qwen3-0.6B's attention shape over a bf16 cache: `batch` sequences of `context` tokens, one decode row each.
std::string attention_figure(int batch, int context, double copy_bytes_per_second, int multiprocessors) {
  const int heads = 16, kv_heads = 8, head_dim = 128, block_size = 16;
  const int64_t blocks_per_sequence = (context + block_size - 1) / block_size;
  const int64_t num_blocks = batch * blocks_per_sequence;
  const size_t cache_bytes = static_cast<size_t>(num_blocks) * block_size * kv_heads * head_dim * sizeof(cuda::bf16);
  DeviceBuffer keys = filled_cache(cache_bytes), values = filled_cache(cache_bytes);
  std::vector<int32_t> tables(num_blocks), context_of(batch, context), offsets(batch), tile_rows(batch),
      tile_counts(batch, 1);
  std::iota(tile_rows.begin(), tile_rows.end(), 0);  // decode rows: a tile each
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), std::mt19937(1));
  for (int b = 0; b < batch; ++b) offsets[b] = static_cast<int32_t>(b * blocks_per_sequence);
  const std::vector<float> query = random_queries(static_cast<size_t>(batch) * heads * head_dim);
  const cuda::AttentionSplits splits = cuda::attention_splits(batch, kv_heads, context, multiprocessors);
  DeviceBuffer device_tables = upload(tables), device_context = upload(context_of), device_offsets = upload(offsets);
  DeviceBuffer device_query = upload(query), device_split = upload(std::vector<int32_t>{splits.split_tokens});
  DeviceBuffer device_tile_rows = upload(tile_rows), device_tile_counts = upload(tile_counts);
  DeviceBuffer workspace =
      value_or_exit(DeviceBuffer::allocate(
                        std::max<size_t>(1, cuda::attention_workspace_bytes(batch, heads, head_dim, splits.splits))),
                    "workspace");
  DeviceBuffer out = value_or_exit(DeviceBuffer::allocate(query.size() * sizeof(cuda::bf16)), "out");
  const cuda::AttentionRows rows{device_query.as<float>(),
                                 device_context.as<int32_t>(),
                                 device_offsets.as<int32_t>(),
                                 device_tables.as<int32_t>(),
                                 device_tile_rows.as<int32_t>(),
                                 device_tile_counts.as<int32_t>(),
                                 device_split.as<int32_t>(),
                                 batch,
                                 batch,
                                 1};
  const cuda::AttentionShape shape{{heads, kv_heads, head_dim}, block_size, 1.0f / std::sqrt(128.0f)};
  const cuda::PagedCache cache{keys.as<void>(), values.as<void>(), cuda::CacheType::kBF16};
  const double seconds = median_gpu_seconds(20, [&] {
    require(
        cuda::paged_attention(rows, shape, cache, splits.splits, workspace.as<void>(), out.as<cuda::bf16>(), nullptr),
        "paged_attention");
  });
  const double kv_bytes = 2.0 * batch * context * kv_heads * head_dim * sizeof(cuda::bf16);
  char line[256];
  std::snprintf(line, sizeof(line),
                "{\"batch\": %d, \"context\": %d, \"splits\": %d, \"seconds\": %.6g, \"kv_bytes_per_second\": %.4g, "
                "\"of_copy_bandwidth\": %.3f}",
                batch, context, splits.splits, seconds, kv_bytes / seconds, kv_bytes / seconds / copy_bytes_per_second);
  return line;
}

// Elements of the weights every decode step reads (bf16 on the GPU): the layers' projections and the LM head.
int64_t decode_weight_elements(const ModelWeights& weights) {
  int64_t elements = weights.lm_head.num_elements();
  for (const LayerWeights& layer : weights.layers) {
    for (const TensorView* view : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.gate_proj,
                                   &layer.up_proj, &layer.down_proj}) {
      elements += view->num_elements();
    }
  }
  return elements;
}

// Decode steps of `batch` sequences after a `context`-token prompt each.
std::string decode_figure(const ModelFiles& model, int batch, int context, int steps, double copy_bytes_per_second) {
  const ModelConfig& config = model.config();
  std::unique_ptr<Backend> backend = value_or_exit(create_backend("cuda", model, {}), "create the CUDA backend");
  const int block_size = 16;
  const int64_t blocks_per_sequence = (context + steps + 8 + block_size - 1) / block_size;
  KvCache cache =
      value_or_exit(backend->create_kv_cache({config.num_hidden_layers, config.num_key_value_heads, config.head_dim,
                                              block_size, DType::kBF16, batch * blocks_per_sequence}),
                    "create the KV cache");
  std::vector<std::vector<int32_t>> tables(batch), prompts(batch);
  std::mt19937 random(3);
  std::uniform_int_distribution<int32_t> token(0, config.vocab_size - 1);
  for (int b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < blocks_per_sequence; ++i)
      tables[b].push_back(static_cast<int32_t>(b * blocks_per_sequence + i));
    while (static_cast<int>(prompts[b].size()) < context) {
      const int32_t id = token(random);
      if (!config.entity_adaptor || id != config.entity_adaptor->entity_token_id) prompts[b].push_back(id);
    }
  }
  HostLogits logits(backend->logits_memory());
  for (int first = 0; first < batch; first += 8) {  // prompts in batches of up to 8 sequences
    Batch prefill;
    for (int b = first; b < std::min(batch, first + 8); ++b) {
      prefill.sequences.push_back({prompts[b], {}, 0, tables[b], LogitsWanted::kNone});
    }
    require(backend->forward(prefill, cache, logits), "prefill");
  }
  std::vector<int32_t> next(batch, 1);
  auto step = [&](int position) {
    Batch decode;
    for (int b = 0; b < batch; ++b) decode.sequences.push_back({std::span(&next[b], 1), {}, position, tables[b]});
    require(backend->forward(decode, cache, logits), "decode");
  };
  for (int warm = 0; warm < 3; ++warm) step(context + warm);
  const auto start = Clock::now();
  for (int s = 0; s < steps; ++s) step(context + 3 + s);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double tokens_per_second = batch * steps / seconds;
  const double kv_bytes_per_token = 2.0 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 2;
  const double weight_bytes = 2.0 * static_cast<double>(decode_weight_elements(model.weights()));
  const double bytes_per_step = weight_bytes + batch * (context + 3 + steps / 2.0) * kv_bytes_per_token;
  const double roofline = batch * copy_bytes_per_second / bytes_per_step;
  // What downloading the logits costs a step, alone: into the backend's logits memory (as the steps above and the
  // engine do), and into pageable memory (what the backend's page-locked memory saves).
  const size_t logit_bytes = logits.size() * sizeof(float);
  DeviceBuffer device_logits = value_or_exit(DeviceBuffer::allocate(logit_bytes), "logits");
  std::vector<float> pageable(logits.size());
  auto seconds_per_step = [&](float* host) {
    cudaMemcpy(host, device_logits.as<void>(), logit_bytes, cudaMemcpyDeviceToHost);  // warm
    const auto start = Clock::now();
    for (int s = 0; s < steps; ++s) cudaMemcpy(host, device_logits.as<void>(), logit_bytes, cudaMemcpyDeviceToHost);
    return std::chrono::duration<double>(Clock::now() - start).count() / steps;
  };
  const double step_seconds = seconds / steps;
  const double download_share = seconds_per_step(logits.data()) / step_seconds;
  const double pageable_share = seconds_per_step(pageable.data()) / step_seconds;
  char line[400];
  std::snprintf(line, sizeof(line),
                "{\"batch\": %d, \"context\": %d, \"tokens_per_second\": %.1f, \"bytes_per_step\": %.4g, "
                "\"roofline_tokens_per_second\": %.1f, \"of_roofline\": %.3f, \"logits_download_share\": %.3f, "
                "\"pageable_download_share\": %.3f, \"logits_bytes\": %zu}",
                batch, context, tokens_per_second, bytes_per_step, roofline, tokens_per_second / roofline,
                download_share, pageable_share, logit_bytes);
  return line;
}

}  // namespace
}  // namespace recgpt

int main(int argc, char** argv) {
  using namespace recgpt;
  if (argc < 2) {
    std::fprintf(stderr, "usage: recgpt_cuda_bench MODEL_DIR [context_tokens] [steps]\n");
    return 2;
  }
  const int context = argc > 2 ? std::atoi(argv[2]) : 512;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 64;
  if (context <= 0 || steps <= 0) {
    std::fprintf(stderr, "recgpt_cuda_bench: context and steps must be positive\n");
    return 2;
  }
  std::unique_ptr<ModelFiles> model = value_or_exit(ModelFiles::open(argv[1]), "open the model");
  int multiprocessors = 0;
  require(cuda_status(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, 0), "device"),
          "query the GPU");
  const double copy = copy_bandwidth();
  std::printf("{\"copy_bytes_per_second\": %.4g,\n \"attention\": [", copy);
  const std::pair<int, int> attention_cases[] = {{1, 32768}, {8, 16384}, {64, 4096}, {128, 2048}};
  for (size_t i = 0; i < std::size(attention_cases); ++i) {
    std::printf("%s\n  %s", i == 0 ? "" : ",",
                attention_figure(attention_cases[i].first, attention_cases[i].second, copy, multiprocessors).c_str());
    std::fflush(stdout);
  }
  std::printf("],\n \"prompt_attention\": [");
  const int prompt_rows[] = {512, 2048, 8192};
  for (size_t i = 0; i < std::size(prompt_rows); ++i) {
    std::printf("%s\n  %s", i == 0 ? "" : ",", prompt_attention_figure(prompt_rows[i], multiprocessors).c_str());
    std::fflush(stdout);
  }
  std::printf("],\n \"decode\": [");
  const int batches[] = {1, 32, 128};
  for (size_t i = 0; i < std::size(batches); ++i) {
    std::printf("%s\n  %s", i == 0 ? "" : ",", decode_figure(*model, batches[i], context, steps, copy).c_str());
    std::fflush(stdout);
  }
  std::printf("]}\n");
  return 0;
}
