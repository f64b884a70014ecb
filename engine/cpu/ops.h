// Elementwise and row-wise kernels of the Qwen3 decoder, in f32, vectorised (AVX-512 or AVX2 at run time) and
// spread over the pool when the input is large enough to pay for it. Call from outside parallel_for.
#pragma once

#include <cstdint>

#include "engine/cpu/thread_pool.h"

namespace recgpt {

// HF Qwen3RMSNorm: out = x * rsqrt(mean(x²) + eps) * weight, per row, in f32. `out` may alias `x`.
void rms_norm(ThreadPool& pool, const float* x /* [rows, dim] */, const float* weight /* [dim] */, int64_t rows,
              int64_t dim, float eps, float* out /* [rows, dim] */);

// HF rotary embedding with rotate_half, in place: for each token t, head, and i < head_dim / 2, with
// angle = float(positions[t]) * inv_freq[i] and inv_freq[i] = theta^(-2i / head_dim), both in f32 as HF computes
// them, (x[i], x[i + head_dim/2]) becomes (x[i]·cos - x[i + half]·sin, x[i + half]·cos + x[i]·sin).
void rope_rotate_half(ThreadPool& pool, float* x /* [num_tokens, num_heads, head_dim] */,
                      const int32_t* positions /* [num_tokens] */, int64_t num_tokens, int num_heads, int head_dim,
                      double theta);

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). `out` may alias gate or up.
void silu_mul(ThreadPool& pool, const float* gate /* [n] */, const float* up /* [n] */, int64_t n,
              float* out /* [n] */);

// x += y.
void add_inplace(ThreadPool& pool, float* x /* [n] */, const float* y /* [n] */, int64_t n);

// Row conversions on the calling thread (no pool: used inside other kernels too). f32 -> bf16 rounds to nearest
// even exactly as f32_to_bf16 in engine/dtype.h.
void convert_f32_to_bf16(const float* in /* [n] */, int64_t n, uint16_t* out /* [n] */);
void convert_bf16_to_f32(const uint16_t* in /* [n] */, int64_t n, float* out /* [n] */);

}  // namespace recgpt
