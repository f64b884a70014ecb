// The CPU backend: Qwen3 forward with f32 activations over f32 or bf16 weights used in place from the mmap.
#pragma once

#include <memory>

#include "engine/backend.h"

namespace recgpt {

Result<std::unique_ptr<Backend>> create_cpu_backend(const ModelFiles& model, const BackendOptions& options);

}  // namespace recgpt
