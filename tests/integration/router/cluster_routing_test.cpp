// The router over two prefill and two decode processes: greedy outputs equal the colocated engine; calls that
// share a long prefix go where it is held, so the prefix is computed once (prefill nodes' counters); calls with
// different prompts spread over both nodes of each tier.
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/tokenizer.h"
#include "tests/integration/router/router_fixtures.h"

namespace recgpt::testing {
namespace {

using nlohmann::json;

TEST_CASE("with 2 prefill and 2 decode nodes a shared prefix is computed once and different prompts spread",
          "[router][routing]") {
  TinyModel tiny;
  // Distinct node ids, so the /metrics samples of the two nodes of a tier can be told apart.
  Node decode_a("decode", tiny, "tcp", 8, {"--node-id", "decode-a"});
  Node decode_b("decode", tiny, "tcp", 8, {"--node-id", "decode-b"});
  Node prefill_a("prefill", tiny, "tcp", 8, {"--node-id", "prefill-a"});
  Node prefill_b("prefill", tiny, "tcp", 8, {"--node-id", "prefill-b"});
  RouterProcess router(tiny, {prefill_a.port, prefill_b.port}, {decode_a.port, decode_b.port});

  // A shared user context of many words, then a different question each time.
  std::string context;
  for (int i = 0; i < 40; ++i) context += "item" + std::to_string(i) + " ";
  int64_t shared_tokens = 0;
  {
    Tokenizer tokenizer = Tokenizer::load(tiny.model->tokenizer_path()).value();
    shared_tokens = static_cast<int64_t>(tokenizer.encode(context).size());
  }
  REQUIRE(shared_tokens >= 48);
  auto computed = [&] {
    double total = 0;
    for (const Node* node : {&prefill_a, &prefill_b})
      total += std::max(0.0, node->metric("recgpt_prefill_tokens_total\\{.*kind=\"computed\".*\\}"));
    return total;
  };
  const double computed_before = computed();
  int64_t prompt_tokens_sum = 0;
  for (int q = 0; q < 5; ++q) {
    const std::string prompt = context + "question " + std::to_string(q) + " about the trip?";
    int64_t prompt_tokens = 0;
    const std::string expected = expected_text(tiny, prompt, 6, &prompt_tokens);
    prompt_tokens_sum += prompt_tokens;
    const CurlReply reply = router.post(
        "/v1/completions",
        json{
            {"model", "recgpt"}, {"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}, {"repetition_penalty", 1.8}}
            .dump());
    REQUIRE(reply.status == 200);
    const json body = json::parse(reply.body);
    INFO("call " << q << ": " << reply.body);
    CHECK(body["choices"][0]["text"] == expected);
    if (q > 0) CHECK(body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>() >= shared_tokens / 16 * 16);
  }
  // Each call computed only past the shared blocks, except the first.
  const double computed_tokens = computed() - computed_before;
  INFO("prompt tokens " << prompt_tokens_sum << ", computed " << computed_tokens << ", shared " << shared_tokens);
  CHECK(computed_tokens <= static_cast<double>(prompt_tokens_sum - 4 * (shared_tokens / 16 * 16)));

  // Different prompts: both nodes of each tier get calls.
  for (int q = 0; q < 6; ++q) {
    const std::string prompt = "unrelated prompt number " + std::to_string(q * 7919) + " " + std::string(q + 1, 'x');
    CHECK(router.post("/v1/completions", json{{"model", "recgpt"}, {"prompt", prompt}, {"max_tokens", 2}}.dump())
              .status == 200);
  }
  for (const Node* node : {&decode_a, &decode_b}) {
    CHECK(node->metric("recgpt_decode_sequences_total\\{.*reason=\"length\".*\\}") >= 1);
  }
  for (const Node* node : {&prefill_a, &prefill_b}) {
    CHECK(node->metric("recgpt_prefill_tokens_total\\{.*kind=\"computed\".*\\}") > 0);
  }
}

}  // namespace
}  // namespace recgpt::testing

namespace recgpt::testing {
namespace {

TEST_CASE("nodes named by DNS (as a headless Service lists them) are found, connected and serve", "[router][dns]") {
  TinyModel tiny;
  Node decode("decode", tiny, "tcp", 8, {"--node-id", "decode-dns"});
  Node prefill("prefill", tiny, "tcp", 8, {"--node-id", "prefill-dns"});
  RouterProcess router(tiny, {}, {},
                       {"--decode-dns", "localhost:" + std::to_string(decode.port), "--prefill-dns",
                        "localhost:" + std::to_string(prefill.port), "--dns-refresh-seconds", "1"});
  const std::string prompt = "a prompt for nodes found by name";
  int64_t prompt_tokens = 0;
  const std::string expected = expected_text(tiny, prompt, 8, &prompt_tokens);
  const CurlReply reply = router.post(
      "/v1/completions",
      json{{"model", "recgpt"}, {"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}, {"repetition_penalty", 1.8}}
          .dump());
  REQUIRE(reply.status == 200);
  const json body = json::parse(reply.body);
  CHECK(body["choices"][0]["text"] == expected);
  CHECK(body["timings"]["prefill_node"] == "prefill-dns");
  CHECK(body["timings"]["decode_node"] == "decode-dns");
  const json cluster = json::parse(curl(router.url("/v1/cluster")).body);
  bool listed = false;
  for (const json& node : cluster["nodes"]) {
    listed = listed || node["address"] == "127.0.0.1:" + std::to_string(decode.port);
  }
  CHECK(listed);
}

TEST_CASE("prefill and decode nodes with bf16 KV pools push and serve, half the bytes of f32", "[router][kv_dtype]") {
  TinyModel tiny;
  Node decode("decode", tiny, "tcp", 8, {"--node-id", "decode-bf16", "--kv-dtype", "bf16"});
  Node prefill("prefill", tiny, "tcp", 8, {"--node-id", "prefill-bf16", "--kv-dtype", "bf16"});
  RouterProcess router(tiny, {prefill.port}, {decode.port});
  const CurlReply reply = router.post(
      "/v1/completions",
      json{{"model", "recgpt"}, {"prompt", "a prompt through bf16 KV"}, {"max_tokens", 8}, {"temperature", 0}}.dump());
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  const json body = json::parse(reply.body);
  CHECK(body["timings"]["prefill_node"] == "prefill-bf16");  // the KV came from the prefill node, not computed locally
  CHECK(body["usage"]["completion_tokens"] == 8);
  CHECK(decode.shows_used(0));
  CHECK(prefill.shows_used(0));
  // The decode node started it once the KV had landed (decode_node/kv_arrivals.h), and did not give up on it.
  CHECK(decode.metric("recgpt_decode_kv_arrival_wait_seconds_count\\{.*\\}") == 1);
  CHECK(decode.metric("recgpt_decode_kv_arrival_timeouts_total\\{.*\\}") == 0);
}

TEST_CASE("a prefill node whose KV layout does not fit the decode node is passed over, and the decode node prefills",
          "[router][kv_dtype]") {
  TinyModel tiny;
  Node decode("decode", tiny, "tcp", 8, {"--node-id", "decode-bf16", "--kv-dtype", "bf16"});
  Node prefill("prefill", tiny, "tcp", 8, {"--node-id", "prefill-f32"});  // f32 KV: misconfigured for this pool
  RouterProcess router(tiny, {prefill.port}, {decode.port});
  const CurlReply reply = router.post(
      "/v1/completions",
      json{{"model", "recgpt"}, {"prompt", "a prompt for a mismatched pair"}, {"max_tokens", 8}, {"temperature", 0}}
          .dump());
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  const json body = json::parse(reply.body);
  CHECK(body["timings"]["prefill_node"] == "decode-bf16");
  CHECK(body["usage"]["completion_tokens"] == 8);
  CHECK(decode.shows_used(0));

  // An operator sees it: /readyz says so once the prefill node is connected, /v1/cluster names the field.
  CurlReply ready;
  for (int attempt = 0; attempt < 100; ++attempt) {  // the router connects to each node within a second or two
    ready = curl(router.url("/readyz"));
    if (ready.body.find("unused") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO(ready.body);
  CHECK(ready.status == 200);
  CHECK(ready.body.find("ready, degraded: decode nodes prefill locally (prefill 1, decode 1)") == 0);
  CHECK(ready.body.find("1 healthy prefill node(s) unused: KV layout fits no decode node") != std::string::npos);
  const json cluster = json::parse(curl(router.url("/v1/cluster")).body);
  std::map<std::string, json> by_node;
  for (const json& node : cluster["nodes"]) by_node[node["node"].get<std::string>()] = node;
  INFO(cluster.dump());
  REQUIRE(by_node.count("prefill-f32") == 1);
  REQUIRE(by_node.count("decode-bf16") == 1);
  CHECK(by_node["prefill-f32"]["kv_layout"]["dtype"] == "f32");
  CHECK(by_node["decode-bf16"]["kv_layout"]["dtype"] == "bf16");
  CHECK(by_node["prefill-f32"]["healthy"] == true);
  const std::string warning = by_node["prefill-f32"].value("warning", "");
  CHECK(warning.find("decode-bf16") != std::string::npos);
  CHECK(warning.find("dtype") != std::string::npos);
  CHECK_FALSE(by_node["decode-bf16"].contains("warning"));
}

}  // namespace
}  // namespace recgpt::testing
