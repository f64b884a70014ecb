#include "engine/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/status.h"
#include "engine/cpu/isa_kernels.h"

namespace recgpt {
namespace {

// Below this many elements a kernel runs on the calling thread: waking the pool costs more than it saves.
constexpr int64_t kParallelMinElements = 32 * 1024;
constexpr int64_t kElementsPerTask = 16 * 1024;

// Runs body(begin, end) over [0, n) in pieces of `grain` elements, on the pool when n is large enough.
template <typename Body>
void for_each_piece(ThreadPool& pool, int64_t n, int64_t grain, int64_t elements_per_unit, const Body& body) {
  if (n * elements_per_unit < kParallelMinElements || n <= 1) {
    body(0, n);
    return;
  }
  int64_t num_tasks = (n + grain - 1) / grain;
  pool.parallel_for(num_tasks, [&](int64_t begin, int64_t end) { body(begin * grain, std::min(n, end * grain)); });
}

}  // namespace

void rms_norm(ThreadPool& pool, const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out) {
  const IsaKernels& kernels = isa_kernels();
  int64_t rows_per_task = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(dim, 1));
  for_each_piece(pool, rows, rows_per_task, dim, [&](int64_t begin, int64_t end) {
    kernels.rms_norm(x + begin * dim, weight, end - begin, dim, eps, out + begin * dim);
  });
}

void rope_angles(ThreadPool& pool, const int32_t* positions, int64_t num_tokens, int head_dim, double theta,
                 RopeAngles& angles) {
  RECGPT_CHECK(head_dim % 2 == 0);
  const int half = head_dim / 2;
  angles.num_tokens = num_tokens;
  angles.half = half;
  angles.cos.resize(num_tokens * half);
  angles.sin.resize(num_tokens * half);
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  // A sine and cosine cost about as much as kSinCosElements elementwise operations: pieces and the threshold for
  // using the pool are sized by that work, not by the count of angles.
  constexpr int64_t kSinCosElements = 8;
  const int64_t work_per_token = kSinCosElements * half;
  for_each_piece(pool, num_tokens, std::max<int64_t>(1, kElementsPerTask / work_per_token), work_per_token,
                 [&](int64_t begin, int64_t end) {
                   for (int64_t t = begin; t < end; ++t) {
                     for (int i = 0; i < half; ++i) {
                       float angle = static_cast<float>(positions[t]) * inv_freq[i];
                       sincosf(angle, &angles.sin[t * half + i], &angles.cos[t * half + i]);
                     }
                   }
                 });
}

void rope_rotate_half(ThreadPool& pool, float* x, const RopeAngles& angles, int num_heads) {
  const int half = angles.half;
  const int64_t token_elements = int64_t{num_heads} * 2 * half;
  int64_t tokens_per_task = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(token_elements, 1));
  for_each_piece(pool, angles.num_tokens, tokens_per_task, token_elements, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* cos_of = angles.cos.data() + t * half;
      const float* sin_of = angles.sin.data() + t * half;
      for (int head = 0; head < num_heads; ++head) {
        float* first = x + t * token_elements + int64_t{head} * 2 * half;
        float* second = first + half;
        for (int i = 0; i < half; ++i) {
          float a = first[i], b = second[i];
          float rotated_first = a * cos_of[i] - b * sin_of[i];
          float rotated_second = b * cos_of[i] + a * sin_of[i];
          first[i] = rotated_first;
          second[i] = rotated_second;
        }
      }
    }
  });
}

void silu_mul(ThreadPool& pool, const float* gate, const float* up, int64_t n, float* out) {
  const IsaKernels& kernels = isa_kernels();
  for_each_piece(pool, n, kElementsPerTask, 1, [&](int64_t begin, int64_t end) {
    kernels.silu_mul(gate + begin, up + begin, end - begin, out + begin);
  });
}

void add_inplace(ThreadPool& pool, float* x, const float* y, int64_t n) {
  const IsaKernels& kernels = isa_kernels();
  for_each_piece(pool, n, kElementsPerTask, 1,
                 [&](int64_t begin, int64_t end) { kernels.add(x + begin, y + begin, end - begin); });
}

void convert_f32_to_bf16(const float* in, int64_t n, uint16_t* out) { isa_kernels().f32_to_bf16(in, n, out); }

void convert_bf16_to_f32(const uint16_t* in, int64_t n, float* out) { isa_kernels().bf16_to_f32(in, n, out); }

float max_value(const float* x, int64_t n) { return isa_kernels().max_value(x, n); }

float exp_shifted(const float* x, int64_t n, float shift, float* out) {
  return isa_kernels().exp_shifted(x, n, shift, out);
}

float mass_at_least(const float* x, int64_t n, float threshold) { return isa_kernels().mass_at_least(x, n, threshold); }

int64_t indices_at_least(const float* x, int64_t n, float threshold, int32_t* out) {
  return isa_kernels().indices_at_least(x, n, threshold, out);
}

}  // namespace recgpt
