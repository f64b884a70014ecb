// Model shapes and machines for the capacity tests: small enough to simulate quickly, shaped like Qwen3 (head_dim
// 64, two query heads per KV head, an MLP three times the width).
#pragma once

#include "capacity/hardware.h"
#include "engine/model_config.h"

namespace recgpt::capacity::testing {

inline ModelConfig qwen3_like(int hidden_size, int layers) {
  ModelConfig config;
  config.hidden_size = hidden_size;
  config.intermediate_size = 3 * hidden_size;
  config.num_hidden_layers = layers;
  config.num_attention_heads = hidden_size / 64;
  config.num_key_value_heads = hidden_size / 128;
  config.head_dim = 64;
  config.vocab_size = 16 * hidden_size;
  return config;
}

// A machine `scale` times a 1 TFLOP/s, 100 GB/s, 2 GB one, with 0.1 ms a step and the given KV link.
inline HardwareProfile test_machine(double scale, double kv_link_bandwidth) {
  HardwareProfile hardware;
  hardware.name = "test";
  hardware.memory_bytes = 2e9 * scale;
  hardware.memory_bandwidth = 1e11 * scale;
  hardware.peak_flops = 1e12 * scale;
  hardware.step_overhead_seconds = 1e-4 * scale;
  hardware.kv_link_bandwidth = kv_link_bandwidth;
  return hardware;
}

}  // namespace recgpt::capacity::testing
