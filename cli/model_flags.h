// Flags shared by the subcommands that load one model and run it: the model folder, threads and KV pool.
#pragma once

#include <string>
#include <vector>

#include "engine/generator.h"

namespace CLI {
class App;
}

namespace recgpt {
class ModelFiles;
class KvCache;
}  // namespace recgpt

namespace recgpt::cli {

struct ModelFlags {
  std::string dir;
  int threads = 0;  // 0: all cores
  int64_t kv_cache_mib = 512;
  std::string kv_dtype = "f32";
  int block_size = 16;
  bool weights_in_place = false;  // BackendOptions::repack_weights off
  std::string backend = "cpu";    // one of available_backends()
  int cuda_device = 0;

  void add_to(CLI::App& command);
  GeneratorOptions generator_options() const;
};

// --kv-dtype's values and their DType: f32, bf16, fp8_e4m3 (the cuda backend's only).
std::vector<std::string> kv_dtype_names();
DType kv_dtype_from_name(const std::string& name);

// Help of --weights-in-place, on every command that loads a model for the CPU backend.
inline constexpr const char* kWeightsInPlaceHelp =
    "Read the weights where the model files are mapped, in pages shared with other processes on this host "
    "(default: repack them at load into the CPU kernels' tiled layout, a private copy that decodes faster)";

// Prints peak RSS against weights + KV pool to stderr, as one JSON line (`recgpt: memory {...}`), so tests
// and operators can check the serving footprint.
void report_memory(const ModelFiles& model, const KvCache& kv_cache);

}  // namespace recgpt::cli
