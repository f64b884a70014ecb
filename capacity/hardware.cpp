#include "capacity/hardware.h"

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/mapped_file.h"

namespace recgpt::capacity {
namespace {

// Datasheet peaks (NVIDIA H100 SXM5 and H200 SXM: dense bf16 989 TFLOP/s; HBM3 3.35 TB/s, HBM3e 4.8 TB/s).
// Efficiencies: decode attention kernels reach 70-83% of HBM bandwidth on large batches, prefill ~60-75% of
// peak (FlashAttention-3, cuBLAS); a 400 Gb/s NIC moves ~85% of line rate (Mooncake, NIXL).
HardwareProfile hopper(std::string name, double memory_bytes, double bandwidth) {
  HardwareProfile profile;
  profile.name = std::move(name);
  profile.memory_bytes = memory_bytes;
  profile.memory_bandwidth = bandwidth;
  profile.bandwidth_efficiency = 0.75;
  profile.peak_flops = 989e12;
  profile.flops_efficiency = 0.6;
  profile.step_overhead_seconds = 0.5e-3;
  profile.kv_link_bandwidth = 0.85 * 400e9 / 8;
  profile.kv_link_latency_seconds = 20e-6;
  return profile;
}

const std::map<std::string, HardwareProfile>& builtins() {
  static const std::map<std::string, HardwareProfile> profiles = {
      {"h100", hopper("h100", 80e9, 3.35e12)},
      {"h200", hopper("h200", 141e9, 4.8e12)},
  };
  return profiles;
}

struct Field {
  const char* name;
  double HardwareProfile::*member;
  double min;  // inclusive
  double max;  // inclusive
  bool required;
};

constexpr double kHuge = 1e30;
const Field kFields[] = {
    {"memory_bytes", &HardwareProfile::memory_bytes, 1, kHuge, true},
    {"memory_reserved_fraction", &HardwareProfile::memory_reserved_fraction, 0, 0.99, false},
    {"memory_bandwidth", &HardwareProfile::memory_bandwidth, 1, kHuge, true},
    {"bandwidth_efficiency", &HardwareProfile::bandwidth_efficiency, 0.01, 1, false},
    {"peak_flops", &HardwareProfile::peak_flops, 1, kHuge, true},
    {"flops_efficiency", &HardwareProfile::flops_efficiency, 0.01, 1, false},
    {"step_overhead_seconds", &HardwareProfile::step_overhead_seconds, 0, 10, false},
    {"step_time_sigma", &HardwareProfile::step_time_sigma, 0, 2, false},
    {"kv_link_bandwidth", &HardwareProfile::kv_link_bandwidth, 1, kHuge, true},
    {"kv_link_latency_seconds", &HardwareProfile::kv_link_latency_seconds, 0, 10, false},
    {"cost_per_hour", &HardwareProfile::cost_per_hour, 0, kHuge, false},
};

}  // namespace

std::vector<std::string> builtin_hardware_names() {
  std::vector<std::string> names;
  for (const auto& [name, profile] : builtins()) names.push_back(name);
  return names;
}

Result<HardwareProfile> parse_hardware(std::string_view json_text, const std::string& source) {
  nlohmann::json json = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return invalid_argument(source + ": expected a JSON object");
  HardwareProfile profile;
  profile.name = source;
  for (const auto& [key, value] : json.items()) {
    if (key == "name") {
      if (!value.is_string()) return invalid_argument(source + ": name: expected a string");
      profile.name = value.get<std::string>();
      continue;
    }
    const Field* field = nullptr;
    for (const Field& candidate : kFields) {
      if (key == candidate.name) field = &candidate;
    }
    if (field == nullptr) return invalid_argument(source + ": unknown field '" + key + "'");
    if (!value.is_number()) return invalid_argument(source + ": " + key + ": expected a number");
    const double number = value.get<double>();
    if (!(number >= field->min && number <= field->max)) {
      std::ostringstream range;
      range << source << ": " << key << ": " << number << " is outside [" << field->min << ", " << field->max << "]";
      return invalid_argument(range.str());
    }
    profile.*(field->member) = number;
  }
  for (const Field& field : kFields) {
    if (field.required && !json.contains(field.name)) {
      return invalid_argument(source + ": missing field '" + field.name + "'");
    }
  }
  return profile;
}

Result<HardwareProfile> load_hardware(const std::string& name_or_path) {
  auto builtin = builtins().find(name_or_path);
  if (builtin != builtins().end()) return builtin->second;
  Result<std::string> text = read_text_file(name_or_path);
  if (!text.is_ok()) {
    std::string names;
    for (const std::string& name : builtin_hardware_names()) names += (names.empty() ? "" : ", ") + name;
    return Status(text.status().code(), "hardware '" + name_or_path + "' is neither a built-in profile (" + names +
                                            ") nor a readable JSON file");
  }
  return parse_hardware(*text, name_or_path);
}

}  // namespace recgpt::capacity
