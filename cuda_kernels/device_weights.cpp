#include "cuda_kernels/device_weights.h"

#include <cmath>
#include <cstring>
#include <initializer_list>

#include "engine/model_files.h"

namespace recgpt::cuda {
namespace {

float element_as_f32(const TensorView& view, int64_t index) {
  switch (view.dtype) {
    case DType::kF32: return static_cast<const float*>(view.data)[index];
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(view.data)[index]);
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(view.data)[index]);
    case DType::kFP8E4M3: break;  // never a weight's type (dtype_from_safetensors_name)
  }
  return 0.0f;
}

// Appends `view`'s elements as bf16 bits (copied as they are when the file holds bf16).
void append_bf16(const TensorView& view, std::vector<uint16_t>& out) {
  const int64_t count = view.num_elements();
  const size_t start = out.size();
  out.resize(start + static_cast<size_t>(count));
  if (view.dtype == DType::kBF16) {
    std::memcpy(out.data() + start, view.data, view.num_bytes());
    return;
  }
  for (int64_t i = 0; i < count; ++i) out[start + i] = f32_to_bf16(element_as_f32(view, i));
}

Result<DeviceBuffer> upload_bytes(const void* data, size_t bytes) {
  RECGPT_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::allocate(bytes));
  RECGPT_RETURN_IF_ERROR(cuda_status(cudaMemcpy(buffer.as<void>(), data, bytes, cudaMemcpyHostToDevice), "upload"));
  return buffer;
}

Result<DeviceBuffer> upload_f32(const TensorView& view) {
  std::vector<float> values(static_cast<size_t>(view.num_elements()));
  for (size_t i = 0; i < values.size(); ++i) values[i] = element_as_f32(view, static_cast<int64_t>(i));
  return upload_bytes(values.data(), values.size() * sizeof(float));
}

// The rows of `parts` (linear layers over the same input) one after another, as one bf16 matrix.
Result<DeviceMatrix> upload_stacked(std::initializer_list<const TensorView*> parts) {
  std::vector<uint16_t> bits;
  DeviceMatrix matrix;
  for (const TensorView* part : parts) {
    append_bf16(*part, bits);
    matrix.rows += static_cast<int>(part->shape[0]);
    matrix.columns = static_cast<int>(part->shape[1]);
  }
  RECGPT_ASSIGN_OR_RETURN(matrix.memory, upload_bytes(bits.data(), bits.size() * sizeof(uint16_t)));
  return matrix;
}

Result<DeviceMatrix> upload_matrix_f32(const TensorView& view) {
  DeviceMatrix matrix;
  matrix.rows = static_cast<int>(view.shape[0]);
  matrix.columns = static_cast<int>(view.shape[1]);
  matrix.is_f32 = true;
  RECGPT_ASSIGN_OR_RETURN(matrix.memory, upload_f32(view));
  return matrix;
}

Result<DeviceLayerWeights> upload_layer(const LayerWeights& layer) {
  DeviceLayerWeights device;
  RECGPT_ASSIGN_OR_RETURN(device.qkv, upload_stacked({&layer.q_proj, &layer.k_proj, &layer.v_proj}));
  RECGPT_ASSIGN_OR_RETURN(device.o, upload_stacked({&layer.o_proj}));
  RECGPT_ASSIGN_OR_RETURN(device.gate_up, upload_stacked({&layer.gate_proj, &layer.up_proj}));
  RECGPT_ASSIGN_OR_RETURN(device.down, upload_stacked({&layer.down_proj}));
  RECGPT_ASSIGN_OR_RETURN(device.input_norm, upload_f32(layer.input_layernorm));
  RECGPT_ASSIGN_OR_RETURN(device.post_attention_norm, upload_f32(layer.post_attention_layernorm));
  RECGPT_ASSIGN_OR_RETURN(device.q_norm, upload_f32(layer.q_norm));
  RECGPT_ASSIGN_OR_RETURN(device.k_norm, upload_f32(layer.k_norm));
  return device;
}

size_t matrix_bytes(const DeviceMatrix& matrix) { return matrix.memory.bytes(); }

}  // namespace

size_t DeviceWeights::bytes() const {
  size_t total = matrix_bytes(embed_tokens) + (lm_head ? matrix_bytes(*lm_head) : 0) + final_norm.bytes();
  for (const DeviceLayerWeights& layer : layers) {
    total += matrix_bytes(layer.qkv) + matrix_bytes(layer.o) + matrix_bytes(layer.gate_up) + matrix_bytes(layer.down) +
             layer.input_norm.bytes() + layer.post_attention_norm.bytes() + layer.q_norm.bytes() + layer.k_norm.bytes();
  }
  if (adaptor) {
    total +=
        matrix_bytes(adaptor->fc1) + matrix_bytes(adaptor->fc2) + adaptor->fc1_bias.bytes() + adaptor->fc2_bias.bytes();
  }
  return total;
}

Result<DeviceWeights> upload_weights(const ModelFiles& model) {
  const ModelWeights& weights = model.weights();
  const ModelConfig& config = model.config();
  DeviceWeights device;
  RECGPT_ASSIGN_OR_RETURN(device.embed_tokens, upload_stacked({&weights.embed_tokens}));
  if (weights.lm_head.data != weights.embed_tokens.data) {
    RECGPT_ASSIGN_OR_RETURN(device.lm_head, upload_stacked({&weights.lm_head}));
  }
  for (const LayerWeights& layer : weights.layers) {
    RECGPT_ASSIGN_OR_RETURN(DeviceLayerWeights uploaded, upload_layer(layer));
    device.layers.push_back(std::move(uploaded));
  }
  RECGPT_ASSIGN_OR_RETURN(device.final_norm, upload_f32(weights.norm));
  if (weights.adaptor) {
    DeviceAdaptorWeights adaptor;
    RECGPT_ASSIGN_OR_RETURN(adaptor.fc1, upload_matrix_f32(weights.adaptor->fc1_weight));
    RECGPT_ASSIGN_OR_RETURN(adaptor.fc2, upload_matrix_f32(weights.adaptor->fc2_weight));
    RECGPT_ASSIGN_OR_RETURN(adaptor.fc1_bias, upload_f32(weights.adaptor->fc1_bias));
    RECGPT_ASSIGN_OR_RETURN(adaptor.fc2_bias, upload_f32(weights.adaptor->fc2_bias));
    device.adaptor = std::move(adaptor);
  }
  // As the CPU backend (engine/cpu/ops.cpp) and Hugging Face compute it: f32 exponent and power.
  const int half = config.head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(config.head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(config.rope_theta), exponent);
  }
  RECGPT_ASSIGN_OR_RETURN(device.rope_inv_freq, upload_bytes(inv_freq.data(), inv_freq.size() * sizeof(float)));
  // cudaMemcpy from pageable memory may return before its last DMA lands, and the backend computes on a
  // non-blocking stream that does not wait for the legacy one.
  RECGPT_RETURN_IF_ERROR(cuda_status(cudaDeviceSynchronize(), "upload the weights"));
  return device;
}

}  // namespace recgpt::cuda
