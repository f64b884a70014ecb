// Device helpers shared by the kernels: element conversions, vector loads into f32 registers, and warp and
// block reductions. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "common/status.h"

namespace recgpt::cuda {

constexpr unsigned kFullWarp = 0xffffffffu;

__device__ __forceinline__ float to_float(float value) { return value; }
__device__ __forceinline__ float to_float(__nv_bfloat16 value) { return __bfloat162float(value); }
__device__ __forceinline__ float to_float(__nv_fp8_e4m3 value) { return static_cast<float>(value); }

template <typename T>
__device__ __forceinline__ T from_float(float value);
template <>
__device__ __forceinline__ float from_float<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}
template <>
__device__ __forceinline__ __nv_fp8_e4m3 from_float<__nv_fp8_e4m3>(float value) {
  return __nv_fp8_e4m3(value);  // round to nearest, saturated to the finite range
}

// dst[i] = src[i] for kCount contiguous elements, with 16-byte loads (8-byte for FP8) where the count allows (the
// caller keeps src aligned to the load: element offsets that are multiples of kCount from a 16-byte aligned base).
template <int kCount>
__device__ __forceinline__ void load_floats(const float* src, float (&dst)[kCount]) {
  if constexpr (kCount % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kCount; i += 4) {
      float4 packed = *reinterpret_cast<const float4*>(src + i);
      dst[i] = packed.x, dst[i + 1] = packed.y, dst[i + 2] = packed.z, dst[i + 3] = packed.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kCount; ++i) dst[i] = src[i];
  }
}

template <int kCount>
__device__ __forceinline__ void load_floats(const __nv_bfloat16* src, float (&dst)[kCount]) {
  if constexpr (kCount % 8 == 0) {
#pragma unroll
    for (int i = 0; i < kCount; i += 8) {
      uint4 packed = *reinterpret_cast<const uint4*>(src + i);
      const auto* pairs = reinterpret_cast<const __nv_bfloat162*>(&packed);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float2 two = __bfloat1622float2(pairs[j]);
        dst[i + 2 * j] = two.x, dst[i + 2 * j + 1] = two.y;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kCount; ++i) dst[i] = __bfloat162float(src[i]);
  }
}

template <int kCount>
__device__ __forceinline__ void load_floats(const __nv_fp8_e4m3* src, float (&dst)[kCount]) {
  if constexpr (kCount % 8 == 0) {
#pragma unroll
    for (int i = 0; i < kCount; i += 8) {
      uint2 packed = *reinterpret_cast<const uint2*>(src + i);
      const auto* pairs = reinterpret_cast<const __nv_fp8x2_e4m3*>(&packed);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float2 two = static_cast<float2>(pairs[j]);
        dst[i + 2 * j] = two.x, dst[i + 2 * j + 1] = two.y;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kCount; ++i) dst[i] = static_cast<float>(src[i]);
  }
}

// The widest access (4 to 16 bytes) that `bytes` of elements at a multiple of their size allow.
__host__ __device__ constexpr int packed_alignment(int bytes) {
  int alignment = 16;
  while (alignment > 4 && bytes % alignment != 0) alignment /= 2;
  return alignment;
}

// kCount elements as stored, converted (to_float) where they are used.
template <typename T, int kCount>
struct alignas(packed_alignment(static_cast<int>(sizeof(T)) * kCount)) Packed {
  T values[kCount];
};

// Asynchronous copies global -> shared (cp.async, sm_80 on) of kBytes, a multiple of 4, both addresses aligned to
// packed_alignment(kBytes); 16-byte pieces bypass L1. A thread's copies complete by groups: commit closes one,
// wait<N> returns once at most N of this thread's groups are pending. Only the copying thread may assume its
// data arrived; others need a barrier after its wait. Each is a compiler barrier to shared memory accesses ("memory"),
// so that a copy into a buffer never moves above the thread's own reads of what the buffer held.
template <int kBytes>
__device__ __forceinline__ void copy_async(void* shared_destination, const void* global_source) {
  constexpr int kPiece = packed_alignment(kBytes);
  static_assert(kBytes % 4 == 0, "cp.async copies 4, 8 or 16 bytes");
  const auto destination = static_cast<unsigned>(__cvta_generic_to_shared(shared_destination));
  const auto* source = static_cast<const char*>(global_source);
#pragma unroll
  for (int offset = 0; offset < kBytes; offset += kPiece) {
    if constexpr (kPiece == 16) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(destination + offset), "l"(source + offset)
                   : "memory");
    } else {
      asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(destination + offset), "l"(source + offset),
                   "n"(kPiece)
                   : "memory");
    }
  }
}
__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(kFullWarp, value, offset);
  return value;
}

__device__ __forceinline__ float warp_max(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(kFullWarp, value, offset));
  return value;
}

// The sum (or max) over the whole thread block, returned to every thread. `scratch` holds one float per warp;
// every thread of the block must call it, and it may be called again right after (it synchronizes twice).
__device__ __forceinline__ float block_sum(float value, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  value = warp_sum(value);
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

__device__ __forceinline__ float block_max(float value, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  value = warp_max(value);
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float best = -INFINITY;
  for (int w = 0; w < warps; ++w) best = fmaxf(best, scratch[w]);
  __syncthreads();
  return best;
}

// ok, or kInternal naming the kernel and CUDA's error for the launch just made.
inline Status launch_status(const char* kernel) {
  cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return Status::ok();
  return internal_error(std::string("CUDA kernel ") + kernel + " failed to launch: " + cudaGetErrorString(error));
}

inline unsigned grid_size(int64_t items, int per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

}  // namespace recgpt::cuda
