// The CPU backend: Qwen3 forward with f32 activations over f32 or bf16 weights, used in place from the mmap or
// repacked at load for the kernels (tiled_weights.h).
#pragma once

#include <memory>

#include "engine/backend.h"

namespace recgpt {

Result<std::unique_ptr<Backend>> create_cpu_backend(const ModelFiles& model, const BackendOptions& options);

}  // namespace recgpt
