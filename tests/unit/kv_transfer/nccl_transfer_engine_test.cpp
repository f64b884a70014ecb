// The `nccl` transfer backend through the TransferEngine face, as far as a process can drive it alone: its
// settings, and what it refuses. Moving device blocks between processes is in
// tests/integration/kv_transfer/gpu_stream_test.cpp. Needs the backend in the build; parts need a GPU, and
// say "SKIPPED:" (ctest counts the test as skipped) where there is none.
#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv {
namespace {

bool nccl_built() {
  const std::vector<std::string> backends = transfer_backends();
  return std::find(backends.begin(), backends.end(), "nccl") != backends.end();
}

Result<std::unique_ptr<TransferEngine>> make_engine(std::vector<std::pair<std::string, std::string>> settings) {
  TransferEngineOptions options;
  options.name = "nccl-test";
  options.settings = std::move(settings);
  return create_transfer_engine("nccl", options);
}

TEST_CASE("nccl settings that are not known or not a device index are refused by name", "[kv_transfer][nccl]") {
  if (!nccl_built()) {
    WARN("SKIPPED: the nccl backend is not in this build (no CUDA runtime or NCCL found)");
    return;
  }
  auto unknown = make_engine({{"colour", "red"}});
  REQUIRE_FALSE(unknown.is_ok());
  CHECK(unknown.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(unknown.status().message(), Catch::Contains("colour") && Catch::Contains("device, control_tls"));
  for (const char* device : {"-1", "one", "0x"}) {
    auto bad = make_engine({{"device", device}});
    REQUIRE_FALSE(bad.is_ok());
    CHECK(bad.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(bad.status().message(), Catch::Contains(std::string("device=") + device));
  }
}

TEST_CASE("the nccl backend without a GPU is unavailable and says why, with one it refuses host memory",
          "[kv_transfer][nccl]") {
  if (!nccl_built()) {
    WARN("SKIPPED: the nccl backend is not in this build (no CUDA runtime or NCCL found)");
    return;
  }
  auto engine = make_engine({});
  if (!engine.is_ok()) {
    CHECK(engine.status().code() == StatusCode::kUnavailable);
    CHECK_THAT(engine.status().message(), Catch::Contains("needs a CUDA device"));
    WARN("SKIPPED (the GPU half): " << engine.status().message());
    return;
  }
  std::vector<std::byte> host(4096);
  auto registered = (*engine)->register_memory({host.data(), host.size(), MemoryKind::kHost, -1});
  REQUIRE_FALSE(registered.is_ok());
  CHECK(registered.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(registered.status().message(), Catch::Contains("CUDA device memory only"));
  // Host memory claimed to be device memory is refused too, not handed to NCCL.
  auto claimed = (*engine)->register_memory({host.data(), host.size(), MemoryKind::kCuda, 0});
  REQUIRE_FALSE(claimed.is_ok());
  CHECK(claimed.status().code() == StatusCode::kInvalidArgument);
  CHECK((*engine)->allocate_memory(4096).status().code() == StatusCode::kUnimplemented);
  const std::byte garbage[8] = {};
  auto connected = (*engine)->connect(garbage, Clock::now() + std::chrono::seconds(1));
  REQUIRE_FALSE(connected.is_ok());
  CHECK(connected.status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recgpt::kv
