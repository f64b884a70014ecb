// Element types of weights, activations and KV, and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace recgpt {

enum class DType { kF32, kBF16, kF16 };

// Bytes per element.
constexpr size_t dtype_size(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

// safetensors / config names: "F32", "BF16", "F16" (safetensors) and "float32", "bfloat16", "float16"
// (torch_dtype). Unknown names give nullopt.
std::optional<DType> dtype_from_safetensors_name(std::string_view name);
std::optional<DType> dtype_from_torch_name(std::string_view name);
std::string_view dtype_name(DType dtype);              // "f32", "bf16", "f16"
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
