// Hardware profiles: built-ins by name, files with every field checked; a typo or a nonsense value is an error
// naming it, never a silent default.
#include "capacity/hardware.h"

#include <catch2/catch.hpp>
#include <filesystem>

namespace recgpt::capacity {
namespace {

constexpr const char* kMinimal =
    R"({"memory_bytes": 24e9, "memory_bandwidth": 40e9, "peak_flops": 2e11, "kv_link_bandwidth": 4e9})";

TEST_CASE("built-in profiles load by name and carry their datasheet figures", "[capacity][hardware]") {
  CHECK(builtin_hardware_names() == std::vector<std::string>{"h100", "h200"});
  auto h200 = load_hardware("h200");
  REQUIRE(h200.is_ok());
  CHECK(h200->memory_bytes == 141e9);
  CHECK(h200->memory_bandwidth == 4.8e12);
  auto missing = load_hardware("/nonexistent/profile.json");
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK_THAT(missing.status().message(), Catch::Contains("h100, h200"));
}

TEST_CASE("the profiles shipped in capacity/profiles load", "[capacity][hardware]") {
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(RECGPT_SOURCE_DIR "/capacity/profiles")) {
    INFO(entry.path());
    auto profile = load_hardware(entry.path().string());
    CHECK(profile.is_ok());
    ++loaded;
  }
  CHECK(loaded >= 1);
}

TEST_CASE("a profile file sets its fields and keeps the defaults of the optional ones", "[capacity][hardware]") {
  auto profile = parse_hardware(kMinimal, "cpu.json");
  REQUIRE(profile.is_ok());
  CHECK(profile->name == "cpu.json");
  CHECK(profile->memory_bandwidth == 40e9);
  CHECK(profile->bandwidth_efficiency == HardwareProfile{}.bandwidth_efficiency);
  auto named = parse_hardware(R"({"name": "vm", "memory_bytes": 1e9, "memory_bandwidth": 1e9, "peak_flops": 1e9,
                                   "kv_link_bandwidth": 1e9, "flops_efficiency": 0.5})",
                              "vm.json");
  REQUIRE(named.is_ok());
  CHECK(named->name == "vm");
  CHECK(named->flops_efficiency == 0.5);
}

TEST_CASE("bad profile files are refused naming the field", "[capacity][hardware]") {
  struct Case {
    const char* json;
    const char* message;
  };
  const Case cases[] = {
      {"[1]", "expected a JSON object"},
      {"{", "expected a JSON object"},
      {R"({"memory_bytes": 1e9, "memory_bandwidth": 1e9, "peak_flops": 1e9})", "missing field 'kv_link_bandwidth'"},
      {R"({"memory_bytes": 1e9, "memory_bandwith": 1e9, "peak_flops": 1e9, "kv_link_bandwidth": 1})",
       "unknown field 'memory_bandwith'"},
      {R"({"memory_bytes": "80GB", "memory_bandwidth": 1e9, "peak_flops": 1e9, "kv_link_bandwidth": 1})",
       "memory_bytes: expected a number"},
      {R"({"memory_bytes": 1e9, "memory_bandwidth": 1e9, "peak_flops": 1e9, "kv_link_bandwidth": 1,
           "bandwidth_efficiency": 1.5})",
       "bandwidth_efficiency: 1.5 is outside"},
      {R"({"memory_bytes": -1, "memory_bandwidth": 1e9, "peak_flops": 1e9, "kv_link_bandwidth": 1})",
       "memory_bytes: -1 is outside"},
  };
  for (const Case& c : cases) {
    INFO(c.json);
    auto profile = parse_hardware(c.json, "bad.json");
    REQUIRE_FALSE(profile.is_ok());
    CHECK(profile.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(profile.status().message(), Catch::Contains(c.message));
  }
}

}  // namespace
}  // namespace recgpt::capacity
