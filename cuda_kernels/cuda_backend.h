// The CUDA backend: the Qwen3 forward on one GPU. Weights live on the device as bf16 (GEMMs through cuBLAS with
// f32 accumulation and an f32 residual stream), the paged KV cache in the device's memory (create_kv_cache),
// and decode steps replay CUDA graphs; logits come back into page-locked host memory (logits_memory). Built only
// with CUDA (RECGPT_CUDA); only the backend registry includes this header. RECGPT_CUDA_PROMPT_ATTENTION:
// "tensor_cores", the default, sends long prompt chunks to the tensor-core attention kernel (kernels.h,
// prompt_attention); "simt" keeps every row on the SIMT kernel. Any other value fails the creation.
#pragma once

#include <memory>

#include "engine/backend.h"

namespace recgpt {

// kUnavailable when no CUDA device is there (the message names CUDA's reason), kInvalidArgument for a device
// index out of range, kUnimplemented for a head shape the attention kernel lacks, kResourceExhausted when the
// weights do not fit.
Result<std::unique_ptr<Backend>> create_cuda_backend(const ModelFiles& model, const BackendOptions& options);

}  // namespace recgpt
