// The one place that knows which backends are compiled in.
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/kv_cache.h"
#ifdef RECGPT_WITH_CUDA
#include "cuda_kernels/cuda_backend.h"
#endif

namespace recgpt {

Result<KvCache> Backend::create_kv_cache(const KvCacheConfig& config) { return KvCache::create(config); }

std::vector<std::string> available_backends() {
#ifdef RECGPT_WITH_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

Result<std::unique_ptr<Backend>> create_backend(std::string_view name, const ModelFiles& model,
                                                const BackendOptions& options) {
  if (name == "cpu") return create_cpu_backend(model, options);
#ifdef RECGPT_WITH_CUDA
  if (name == "cuda") return create_cuda_backend(model, options);
#endif
  return invalid_argument("unknown backend '" + std::string(name) + "'");
}

}  // namespace recgpt
