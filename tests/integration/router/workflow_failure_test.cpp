// Workflows when things go wrong: the decode node the workflow ran on dies after the planner (seen in the
// stream's step event), and the experts and the arbiter run on the other one; a step that misses its stage
// deadline is dropped, named in the answer, and the workflow goes on with what finished; nodes without the
// workflow's catalogue fail it with that cause.
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/integration/router/router_fixtures.h"

namespace recgpt::testing {
namespace {

using nlohmann::json;

// Streams workflow `name` for `request` through the router and returns its events; the planner's step event (which
// names the decode node the workflow prefers) is handed to `on_planner` as it comes.
std::vector<json> stream_workflow(const RouterProcess& router, const std::string& name, json request,
                                  const std::function<void(const json&)>& on_planner) {
  request["options"]["stream"] = true;
  Subprocess stream =
      start_curl(router.url("/v1/workflows/" + name),
                 {"-N", "--max-time", "120", "-H", "Content-Type: application/json", "--data-binary", request.dump()});
  std::vector<json> events;
  for (;;) {
    auto line = stream.read_line(Clock::now() + seconds(60));
    if (!line.is_ok()) break;
    if (line->rfind("data: ", 0) != 0 || *line == "data: [DONE]") continue;
    events.push_back(json::parse(line->substr(6)));
    if (events.back()["object"] == "workflow.step" && events.back()["name"] == "planner") on_planner(events.back());
  }
  return events;
}

// Two decode nodes (decode-a, decode-b) and a prefill node of `model` with `kv_mib` each, behind a router serving
// the workflows of `dir`.
struct TwoDecodeCluster {
  Node decode_a;
  Node decode_b;
  Node prefill;
  RouterProcess router;
  TwoDecodeCluster(const TinyModel& model, int kv_mib, const std::filesystem::path& dir)
      : decode_a("decode", model, "tcp", kv_mib, {"--node-id", "decode-a"}),
        decode_b("decode", model, "tcp", kv_mib, {"--node-id", "decode-b"}),
        prefill("prefill", model, "tcp", kv_mib, {"--node-id", "prefill-a"}),
        router(model, {prefill.port}, {decode_a.port, decode_b.port}, {"--workflows", dir.string()}) {}
  Node& decode(const std::string& name) { return name == "decode-a" ? decode_a : decode_b; }
};

TEST_CASE("a workflow whose decode node dies after the planner finishes on the other decode node",
          "[router][workflow][workflow_failure]") {
  // The experts write long enough on the small model to be running when the node dies: the intent workflow's
  // short tag lists could all finish on it in the milliseconds between the planner's event and the kill (seen
  // once in a run of the [router] tests).
  TinyModel small("small");
  const std::filesystem::path dir = workflows_folder(small, "relay", R"({
    "name": "relay",
    "steps": [
      {"name": "planner", "prompt": "Name three topics.", "max_tokens": 4},
      {"name": "experts", "fan_out": ["a", "b", "c"], "prompt": "Write about {{item}}.", "max_tokens": 150},
      {"name": "arbiter", "prompt": "Sum up: {{steps.experts.text}}", "max_tokens": 8}
    ]})");
  TwoDecodeCluster cluster(small, 16, dir);
  // The planner's step event names the decode node the workflow prefers: kill it.
  std::string planner_node;
  const std::vector<json> events = stream_workflow(cluster.router, "relay", sample_request(), [&](const json& planner) {
    planner_node = planner["calls"][0]["decode_node"];
    cluster.decode(planner_node).process.kill(SIGKILL);
  });
  REQUIRE_FALSE(planner_node.empty());
  REQUIRE_FALSE(events.empty());
  const json& result = events.back();
  INFO(result.dump());
  REQUIRE(result["object"] == "workflow.result");
  CHECK(result["dropped"].empty());
  const std::string survivor = planner_node == "decode-a" ? "decode-b" : "decode-a";
  for (const json& step : result["steps"]) {
    if (step["name"] == "planner") continue;
    for (const json& call : step["calls"]) CHECK(call["decode_node"] == survivor);
  }
  CHECK(result["steps"].size() == 3);
}

TEST_CASE("a workflow whose decode node dies mid-expert: each expert goes on from its tokens on the other node",
          "[router][workflow][workflow_failure][migration]") {
  TinyModel small("small");
  const std::filesystem::path dir = workflows_folder(small, "essays", R"({
    "name": "essays",
    "steps": [
      {"name": "planner", "prompt": "Name three topics.", "max_tokens": 4},
      {"name": "experts", "fan_out": ["a", "b", "c"], "prompt": "Write about {{item}}.", "max_tokens": 400,
       "temperature": 2, "retries": 1}
    ]})");
  TwoDecodeCluster cluster(small, 32, dir);
  json request = sample_request();  // its seed fixes every expert's draws
  // The experts run on the planner's decode node (affinity): once all three decode there, it is killed.
  std::string planner_node;
  const std::vector<json> events = stream_workflow(cluster.router, "essays", request, [&](const json& planner) {
    planner_node = planner["calls"][0]["decode_node"];
    Node& doomed = cluster.decode(planner_node);
    REQUIRE(doomed.shows("recgpt_requests\\{.*state=\"running\".*\\}", 3));
    doomed.process.kill(SIGKILL);
  });
  REQUIRE_FALSE(planner_node.empty());
  REQUIRE_FALSE(events.empty());
  const json disturbed = events.back();
  INFO(disturbed.dump());
  REQUIRE(disturbed["object"] == "workflow.result");
  REQUIRE(disturbed["steps"].size() == 2);
  const std::string survivor = planner_node == "decode-a" ? "decode-b" : "decode-a";

  // The same workflow undisturbed, on the survivor: the same seed gives the same essays.
  const CurlReply again = cluster.router.post("/v1/workflows/essays", request.dump(), {"--max-time", "120"});
  REQUIRE(again.status == 200);
  const json undisturbed = json::parse(again.body);
  for (size_t i = 0; i < 3; ++i) {
    const json& call = disturbed["steps"][1]["calls"][i];
    CHECK(call["decode_node"] == survivor);
    CHECK(call["attempts"] == 2);
    CHECK(call["continued_tokens"].get<int64_t>() >= 1);  // not started over
    CHECK(call["completion_tokens"] == undisturbed["steps"][1]["calls"][i]["completion_tokens"]);
    CHECK(call["text"] == undisturbed["steps"][1]["calls"][i]["text"]);
  }
  CHECK(undisturbed["steps"][1]["calls"][0]["continued_tokens"] == 0);
}

TEST_CASE("a step past its stage deadline is dropped and named, the workflow goes on with what finished",
          "[router][workflow][workflow_failure]") {
  TinyModel tiny;
  const std::filesystem::path dir = workflows_folder(tiny, "hurry", R"({
    "name": "hurry",
    "steps": [
      {"name": "slow", "fan_out": ["a", "b"], "prompt": "Write about {{item}}.", "max_tokens": 4000,
       "deadline_ms": 1, "retries": 1},
      {"name": "summary", "prompt": "Sum up: {{steps.slow.text}}", "max_tokens": 8}
    ]})");
  Node decode("decode", tiny, "tcp", 16);
  Node prefill("prefill", tiny, "tcp", 16);
  RouterProcess router(tiny, {prefill.port}, {decode.port}, {"--workflows", dir.string()});
  const CurlReply reply = router.post("/v1/workflows/hurry", sample_request().dump(), {"--max-time", "60"});
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  const json result = json::parse(reply.body);
  REQUIRE(result["dropped"].size() == 2);
  for (const json& dropped : result["dropped"]) {
    CHECK(dropped["step"] == "slow");
    CHECK_THAT(dropped["error"].get<std::string>(), Catch::Contains("deadline"));
  }
  CHECK(result["steps"][1]["calls"][0]["status"] == "ok");
  CHECK(decode.shows_used(0));
}

TEST_CASE("a workflow whose nodes lack its catalogue fails naming the step and the catalogue, not a later symptom",
          "[router][workflow][workflow_failure]") {
  // Started without --catalogue: every expert call fails on the nodes; the arbiter then has nothing to choose among.
  TinyModel tiny;
  Node decode("decode", tiny, "tcp", 16);
  Node prefill("prefill", tiny, "tcp", 16);
  RouterProcess router(tiny, {prefill.port}, {decode.port},
                       {"--workflows", std::string(RECGPT_SOURCE_DIR) + "/workflows"});
  const CurlReply reply = router.post("/v1/workflows/intent", sample_request().dump(), {"--max-time", "60"});
  INFO(reply.body);
  CHECK(reply.status == 503);  // the cluster's configuration, not the request
  const json error = json::parse(reply.body)["error"];
  CHECK(error["code"] == "unavailable");
  CHECK_THAT(error["message"].get<std::string>(),
             Catch::Contains("step 'experts'") && Catch::Contains("catalogue 'tags' is not loaded on this node"));
  CHECK(decode.shows_used(0));
}

TEST_CASE("a workflow whose client goes away stops: its running call is cancelled and no later step runs",
          "[router][workflow][workflow_failure][disconnect]") {
  TinyModel tiny;
  const std::filesystem::path dir = workflows_folder(tiny, "steps", R"({
    "name": "steps",
    "steps": [
      {"name": "first", "prompt": "Name a topic.", "max_tokens": 8},
      {"name": "second", "fan_out": ["a", "b"], "prompt": "Write about {{item}} and {{steps.first.text}}.",
       "max_tokens": 8},
      {"name": "third", "prompt": "Sum up: {{steps.second.text}}", "max_tokens": 8}
    ]})");
  Node decode("decode", tiny, "tcp", 16);
  Node prefill("prefill", tiny, "tcp", 16);
  RouterProcess router(tiny, {prefill.port}, {decode.port}, {"--workflows", dir.string()});
  // Stopped, the decode node answers no reservation: the first step's call waits in its ReserveKv.
  Paused paused(decode);
  Subprocess client = start_curl(
      router.url("/v1/workflows/steps"),
      {"--max-time", "60", "-H", "Content-Type: application/json", "--data-binary", sample_request().dump()});
  const bool running =
      eventually([&] { return router.metric("recgpt_router_requests_running\\{.*path=\"/v1/workflows\".*\\}") == 1; });
  client.kill(SIGKILL);
  (void)client.wait(Clock::now() + seconds(10));
  // The router noticed: the workflow ended once its call, cancelled, got its reservation back and released it.
  const bool stopped =
      eventually([&] { return router.metric("recgpt_router_requests_running\\{.*path=\"/v1/workflows\".*\\}") == 0; },
                 milliseconds(500));
  paused.resume();
  REQUIRE(running);
  CHECK_FALSE(stopped);  // it could not end while the decode node was stopped
  CHECK(eventually([&] {
    return router.metric("recgpt_router_requests_total\\{.*code=\"499\".*path=\"/v1/workflows\".*\\}") == 1;
  }));
  CHECK(router.metric("recgpt_router_requests_running\\{.*path=\"/v1/workflows\".*\\}") == 0);
  // Nothing was prefilled or decoded for it, and the reservation came back.
  CHECK(decode.shows_used(0));
  CHECK(prefill.metric("recgpt_prefill_tokens_total\\{.*kind=\"computed\".*\\}") == 0);
  CHECK(decode.metric("recgpt_decode_local_prefills_total\\{.*\\}") <= 0);
  for (const char* reason : {"stop", "length", "constraint", "cancelled", "error"}) {
    INFO(reason);
    CHECK(decode.metric("recgpt_decode_sequences_total\\{.*reason=\"" + std::string(reason) + "\".*\\}") <= 0);
  }
}

}  // namespace
}  // namespace recgpt::testing
