// A disaggregated cluster on the GPU: prefill and decode nodes on the CUDA backend with their KV pools in device
// memory, the KV moved by the nccl transfer backend (CUDA IPC between the two processes on one GPU) or by ucx, the
// router in front. Without a GPU, or in a build without the CUDA backend or NCCL, it says "SKIPPED:".
#include <algorithm>
#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "tests/integration/kv_transfer/device_memory.h"
#include "tests/integration/router/router_fixtures.h"

namespace recgpt::testing {
namespace {

using nlohmann::json;

std::string why_no_gpu_cluster() {
  const std::vector<std::string> compute = available_backends();
  if (std::find(compute.begin(), compute.end(), "cuda") == compute.end()) return "no CUDA backend in this build";
  const std::vector<std::string> transfer = kv::transfer_backends();
  if (std::find(transfer.begin(), transfer.end(), "nccl") == transfer.end()) return "no nccl backend in this build";
  return kv::testing::cuda_devices().why_none;
}

TEST_CASE("a disaggregated cluster on the GPU answers through the router and returns every block", "[router][gpu]") {
  if (std::string why = why_no_gpu_cluster(); !why.empty()) {
    WARN("SKIPPED: " << why);
    return;
  }
  // The KV over nccl (CUDA IPC on one GPU), or over ucx on tcp (staged through host memory where UCX has no CUDA
  // transport).
  const std::string transfer = GENERATE(as<std::string>{}, "nccl", "ucx");
  INFO("transfer backend " << transfer);
  TinyModel tiny;
  const std::vector<std::string> on_gpu = {"--backend",          "cuda",
                                           "--transfer-backend", transfer,
                                           "--transfer-setting", transfer == "nccl" ? "device=0" : "tls=tcp"};
  Node decode_node("decode", tiny, "", 8, on_gpu);
  Node prefill_node("prefill", tiny, "", 8, on_gpu);
  RouterProcess router(tiny, {prefill_node.port}, {decode_node.port});
  const std::string prompt = "Once upon a time in a land far away there lived";
  int64_t prompt_tokens = 0;
  const std::string cpu_text = expected_text(tiny, prompt, 24, &prompt_tokens);
  const CurlReply reply = router.post(
      "/v1/completions",
      json{{"model", "recgpt"}, {"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}, {"repetition_penalty", 1.8}}
          .dump());
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  const json body = json::parse(reply.body);
  const std::string gpu_text = body["choices"][0]["text"];
  // bf16 arithmetic may leave the CPU's f32 greedy path at a near tie, so the texts are shown, not compared.
  INFO("gpu: " << gpu_text << "\ncpu: " << cpu_text);
  CHECK_FALSE(gpu_text.empty());
  CHECK(body["usage"]["prompt_tokens"] == prompt_tokens);
  CHECK(body["usage"]["completion_tokens"].get<int>() >= 1);
  CHECK(decode_node.shows_used(0));
  CHECK(prefill_node.shows_used(0));
}

}  // namespace
}  // namespace recgpt::testing
