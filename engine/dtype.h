// Element types of weights, activations and KV, and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace recgpt {

// kFP8E4M3 is a KV cache type only (the CUDA backend's): no model file or CPU kernel holds it.
enum class DType { kF32, kBF16, kF16, kFP8E4M3 };

// Bytes per element.
constexpr size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16:
    case DType::kF16: return 2;
    case DType::kFP8E4M3: return 1;
  }
  return 4;
}

// safetensors / config names: "F32", "BF16", "F16" (safetensors) and "float32", "bfloat16", "float16"
// (torch_dtype). Unknown names give nullopt, and so does FP8: weights are never FP8.
std::optional<DType> dtype_from_safetensors_name(std::string_view name);
std::optional<DType> dtype_from_torch_name(std::string_view name);
std::string_view dtype_name(DType dtype);              // "f32", "bf16", "f16", "fp8_e4m3"
std::string_view safetensors_dtype_name(DType dtype);  // inverse of dtype_from_safetensors_name
std::string_view torch_dtype_name(DType dtype);        // inverse of dtype_from_torch_name

inline float bf16_to_f32(uint16_t value) {
  uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

// Round to nearest even, as PyTorch and the hardware instructions do; NaN stays NaN.
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t value);
uint16_t f32_to_f16(float value);

}  // namespace recgpt
