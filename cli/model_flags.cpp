#include "cli/model_flags.h"

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/model_files.h"

namespace recgpt::cli {

void ModelFlags::add_to(CLI::App& command) {
  command.add_option("--model", dir, "Model folder (Hugging Face format)")->required();
  command.add_option("--threads", threads, "Compute threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  command.add_option("--kv-cache-mib", kv_cache_mib, "KV pool size in MiB")->check(CLI::PositiveNumber);
  command.add_option("--kv-dtype", kv_dtype, "KV cache element type (fp8_e4m3: the cuda backend's)")
      ->check(CLI::IsMember(kv_dtype_names()));
  command.add_option("--block-size", block_size, "Tokens per KV block")->check(CLI::Range(1, 1024));
  command.add_flag("--weights-in-place", weights_in_place, kWeightsInPlaceHelp);
  command.add_option("--backend", backend, "Compute backend")->check(CLI::IsMember(available_backends()));
  command.add_option("--cuda-device", cuda_device, "GPU of the cuda backend")->check(CLI::NonNegativeNumber);
}

GeneratorOptions ModelFlags::generator_options() const {
  GeneratorOptions options;
  options.backend.num_threads = threads;
  options.backend.repack_weights = !weights_in_place;
  options.backend.cuda_device = cuda_device;
  options.backend_name = backend;
  options.kv_cache_bytes = kv_cache_mib << 20;
  options.kv_dtype = kv_dtype_from_name(kv_dtype);
  options.block_size = block_size;
  return options;
}

std::vector<std::string> kv_dtype_names() { return {"f32", "bf16", "fp8_e4m3"}; }

DType kv_dtype_from_name(const std::string& name) {
  return name == "bf16" ? DType::kBF16 : name == "fp8_e4m3" ? DType::kFP8E4M3 : DType::kF32;
}

void report_memory(const ModelFiles& model, const KvCache& kv_cache) {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  double peak_rss = static_cast<double>(usage.ru_maxrss) * 1024.0;
  double weights = static_cast<double>(model.weight_bytes());
  double kv_pool = static_cast<double>(kv_cache.storage_bytes());
  std::fprintf(stderr,
               "recgpt: memory {\"peak_rss_bytes\": %.0f, \"weight_bytes\": %.0f, \"kv_pool_bytes\": %.0f, "
               "\"peak_rss_over_weights_plus_kv\": %.4f}\n",
               peak_rss, weights, kv_pool, peak_rss / (weights + kv_pool));
}

}  // namespace recgpt::cli
