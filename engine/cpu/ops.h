// Elementwise and row-wise kernels of the Qwen3 decoder, in f32, vectorised (AVX-512 or AVX2 at run time) and
// spread over the pool when the input is large enough to pay for it. Call from outside parallel_for.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/cpu/thread_pool.h"

namespace recgpt {

// HF Qwen3RMSNorm: out = x * rsqrt(mean(x²) + eps) * weight, per row, in f32. `out` may alias `x`.
void rms_norm(ThreadPool& pool, const float* x /* [rows, dim] */, const float* weight /* [dim] */, int64_t rows,
              int64_t dim, float eps, float* out /* [rows, dim] */);

// The rotary angles of a forward's tokens, as HF computes them in f32: angle = float(position) * inv_freq[i],
// inv_freq[i] = theta^(-2i / head_dim), for i < head_dim / 2. Computed once per forward (rope_angles) and shared
// by every layer's q and k: the sines and cosines cost more than the rotations.
struct RopeAngles {
  int64_t num_tokens = 0;
  int half = 0;                 // head_dim / 2
  std::vector<float> cos, sin;  // [num_tokens, half]
};

// Fills `angles` (reusing its storage) for `positions`.
void rope_angles(ThreadPool& pool, const int32_t* positions /* [num_tokens] */, int64_t num_tokens, int head_dim,
                 double theta, RopeAngles& angles);

// HF rotary embedding with rotate_half, in place: for each token t, head, and i < head_dim / 2,
// (x[i], x[i + head_dim/2]) becomes (x[i]·cos - x[i + half]·sin, x[i + half]·cos + x[i]·sin) of t's angle i.
void rope_rotate_half(ThreadPool& pool, float* x /* [angles.num_tokens, num_heads, 2 * angles.half] */,
                      const RopeAngles& angles, int num_heads);

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). `out` may alias gate or up.
void silu_mul(ThreadPool& pool, const float* gate /* [n] */, const float* up /* [n] */, int64_t n,
              float* out /* [n] */);

// x += y.
void add_inplace(ThreadPool& pool, float* x /* [n] */, const float* y /* [n] */, int64_t n);

// Row conversions on the calling thread (no pool: used inside other kernels too). f32 -> bf16 rounds to nearest
// even exactly as f32_to_bf16 in engine/dtype.h.
void convert_f32_to_bf16(const float* in /* [n] */, int64_t n, uint16_t* out /* [n] */);
void convert_bf16_to_f32(const uint16_t* in /* [n] */, int64_t n, float* out /* [n] */);

// The sampler's passes over a vocabulary row, on the calling thread.
// The largest of x[0, n), passing over NaN; -inf when nothing else is there (n == 0 too).
float max_value(const float* x /* [n] */, int64_t n);
// out[i] = exp(x[i] - shift), by the vector exp (within ~2 ulp for x[i] - shift <= 88; 0 for -inf); returns the
// sum of out, added in float vector lanes (each lane's n / lanes additions round to 2^-24 of its sum).
float exp_shifted(const float* x /* [n] */, int64_t n, float shift, float* out /* [n] */);
// The sum of the x[i] >= threshold, added in float vector lanes as exp_shifted's.
float mass_at_least(const float* x /* [n] */, int64_t n, float threshold);
// Writes the i with x[i] >= threshold to out, in ascending order; returns how many.
int64_t indices_at_least(const float* x /* [n] */, int64_t n, float threshold, int32_t* out /* [n] */);

}  // namespace recgpt
