// The one place that knows which backends are compiled in.
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"

namespace recgpt {

std::vector<std::string> available_backends() { return {"cpu"}; }

Result<std::unique_ptr<Backend>> create_backend(std::string_view name, const ModelFiles& model,
                                                const BackendOptions& options) {
  if (name == "cpu") return create_cpu_backend(model, options);
  return invalid_argument("unknown backend '" + std::string(name) + "'");
}

}  // namespace recgpt
