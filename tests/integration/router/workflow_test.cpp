// The workflows over HTTP on 2 prefill + 2 decode nodes with the built-in tag catalogue: `intent` writes
// personas that parse, expert tags from the catalogue, final tags among the experts' and the same answer for the
// same seed; its prompt tokens computed stay within the shared context plus each agent's own suffix, while the
// `v1` baseline computes the whole text context for every agent; `explain` and `judge` give well-formed results;
// bad requests are 4xx naming the field.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tests/integration/router/router_fixtures.h"

namespace recgpt::testing {
namespace {

using nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::set<std::string> catalogue() {
  std::set<std::string> tags;
  std::istringstream lines(read_file(std::string(RECGPT_SOURCE_DIR) + "/data/tag_catalogue.txt"));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) tags.insert(line);
  return tags;
}

TEST_CASE("intent, explain and judge run over HTTP on 2 prefill and 2 decode nodes", "[router][workflow]") {
  TinyModel tiny;
  const std::string tags = "tags=" + std::string(RECGPT_SOURCE_DIR) + "/data/tag_catalogue.txt";
  std::vector<std::unique_ptr<Node>> nodes;
  for (const char* role : {"decode", "decode", "prefill", "prefill"}) {
    const std::string id = std::string(role) + "-" + std::to_string(nodes.size());
    nodes.push_back(
        std::make_unique<Node>(role, tiny, "tcp", 16, std::vector<std::string>{"--node-id", id, "--catalogue", tags}));
  }
  RouterProcess router(tiny, {nodes[2]->port, nodes[3]->port}, {nodes[0]->port, nodes[1]->port},
                       {"--workflows", std::string(RECGPT_SOURCE_DIR) + "/workflows"});
  const json request = json::parse(read_file(std::string(RECGPT_SOURCE_DIR) + "/examples/intent_request.json"));

  auto prefill_computed = [&] {
    double total = 0;
    for (size_t i = 2; i < 4; ++i)
      total += std::max(0.0, nodes[i]->metric("recgpt_prefill_tokens_total\\{.*kind=\"computed\".*\\}"));
    return total;
  };
  const double computed_before = prefill_computed();
  const CurlReply first = router.post("/v1/workflows/intent", request.dump(), {"--max-time", "120"});
  INFO(first.body);
  REQUIRE(first.status == 200);
  const json result = json::parse(first.body);
  const json& output = result["output"];
  const std::set<std::string> known = catalogue();
  REQUIRE_FALSE(output["personas"].empty());
  CHECK(output["personas"].size() <= 3);
  std::set<std::string> expert_tags;
  for (const json& expert : output["expert_tags"]) {
    for (const json& tag : expert["tags"]) {
      CHECK(known.count(tag.get<std::string>()) == 1);
      expert_tags.insert(tag.get<std::string>());
    }
    CHECK(expert["tags"].size() <= 4);
  }
  REQUIRE_FALSE(output["final_tags"].empty());
  for (const json& tag : output["final_tags"]) CHECK(expert_tags.count(tag.get<std::string>()) == 1);
  CHECK(output["final_tags"].size() <= 5);
  CHECK(result["dropped"].empty());

  // Same request, same seed: same answer.
  const CurlReply again = router.post("/v1/workflows/intent", request.dump(), {"--max-time", "120"});
  REQUIRE(again.status == 200);
  CHECK(json::parse(again.body)["output"] == output);

  // Prompt tokens computed: the shared context once, then each agent's own suffix (and up to a block each).
  const json& usage = result["usage"];
  const int64_t hybrid = usage["context"]["hybrid_tokens"];
  int64_t suffixes = 0;
  int calls = 0;
  for (const json& step : result["steps"]) {
    for (const json& call : step["calls"]) {
      suffixes += call["prompt_tokens"].get<int64_t>() - hybrid;
      ++calls;
    }
  }
  INFO("computed " << usage["computed_prompt_tokens"] << ", hybrid " << hybrid << ", suffixes " << suffixes);
  CHECK(usage["computed_prompt_tokens"].get<int64_t>() <= hybrid + suffixes + 16 * calls);
  // The prefill nodes' own counters agree (the second, identical request computed its prompts' last blocks only).
  const double computed_by_nodes = prefill_computed() - computed_before;
  CHECK(computed_by_nodes >= usage["computed_prompt_tokens"].get<double>());
  CHECK(computed_by_nodes <= usage["computed_prompt_tokens"].get<double>() + 16.0 * 2 * calls);

  // V1: every agent reads its own copy of the whole text context.
  json v1_request = request;
  v1_request["options"]["v1"] = true;
  v1_request["options"]["seed"] = 8;
  const CurlReply v1 = router.post("/v1/workflows/intent", v1_request.dump(), {"--max-time", "120"});
  REQUIRE(v1.status == 200);
  const json v1_usage = json::parse(v1.body)["usage"];
  CHECK(v1_usage["computed_prompt_tokens"].get<int64_t>() >= 3 * v1_usage["context"]["text_tokens"].get<int64_t>());
  CHECK(v1_usage["context"]["text_tokens"] == usage["context"]["text_tokens"]);

  json explain = request;
  explain["item"] = {{"title", "Insulated winter hiking boots"}, {"price", "899 CNY"}, {"brand", "Northpeak"}};
  const CurlReply explained = router.post("/v1/workflows/explain", explain.dump(), {"--max-time", "120"});
  INFO(explained.body);
  REQUIRE(explained.status == 200);
  const json explanation = json::parse(explained.body)["output"];
  CHECK(explanation["guideline"].size() == 1);
  CHECK(explanation["explanation"].size() == 1);

  json judge = request;
  judge["candidate"] = "Recommended: insulated winter hiking boots, because you bought trail running shoes.";
  const CurlReply judged = router.post("/v1/workflows/judge", judge.dump(), {"--max-time", "120"});
  INFO(judged.body);
  REQUIRE(judged.status == 200);
  const json verdict = json::parse(judged.body)["output"];
  REQUIRE(verdict["reviewer"].size() == 1);
  CHECK(std::set<std::string>{"Superior", "Average", "Bad"}.count(verdict["reviewer"][0].get<std::string>()) == 1);
  CHECK(verdict["evaluators"].size() >= 1);
  CHECK(verdict["reasons"].size() == 1);

  // Per-stage latency histograms.
  const std::string metrics = curl(router.url("/metrics")).body;
  CHECK_THAT(metrics, Catch::Contains("recgpt_workflow_stage_duration_seconds_count{"));
  for (const char* stage : {"planner", "experts", "arbiter", "guideline", "reviewer"}) {
    CHECK(metrics.find(std::string("stage=\"") + stage + "\"") != std::string::npos);
  }

  // Bad requests: 4xx naming the field; the router serves on.
  CHECK(router.post("/v1/workflows/nope", request.dump()).status == 404);
  json too_many = request;
  too_many["options"]["experts"] = 99;
  const CurlReply refused = router.post("/v1/workflows/intent", too_many.dump());
  CHECK(refused.status == 400);
  CHECK(json::parse(refused.body)["error"]["param"] == "options.experts");
  const CurlReply malformed = router.post("/v1/workflows/intent", "{\"history\": [{\"title\": 3}");
  CHECK(malformed.status == 400);
  json empty_context = {{"options", {{"experts", 2}}}};
  CHECK(json::parse(router.post("/v1/workflows/intent", empty_context.dump()).body)["error"]["param"] == "history");
  json huge = request;
  for (int i = 0; i < 600; ++i) {
    const std::string number = std::to_string(i);  // (GCC 12 warns wrongly on "literal" + std::to_string())
    huge["history"].push_back({{"item_id", number}, {"title", "a long title of a history item number " + number}});
  }
  const CurlReply over = router.post("/v1/workflows/intent", huge.dump());
  CHECK(over.status == 400);
  CHECK(json::parse(over.body)["error"]["code"] == "context_length_exceeded");
  CHECK(router.post("/v1/workflows/intent", request.dump(), {"--max-time", "120"}).status == 200);
}

TEST_CASE("a workflow's JSON steps answer values their schema shapes, fanned out or not", "[router][workflow][json]") {
  TinyModel tiny;
  const std::filesystem::path dir = workflows_folder(tiny, "verdicts", R"({
    "name": "verdicts",
    "steps": [
      {"name": "rate", "fan_out": ["price", "fit"], "prompt": "Rate the {{item}} for this user.", "output": "json",
       "constraint": {"kind": "json", "schema": {"type": "object", "properties": {"score": {"enum": [1, 2, 3]},
         "keep": {"type": "boolean"}}, "required": ["score", "keep"], "additionalProperties": false}},
       "max_tokens": 200, "temperature": 1.0},
      {"name": "verdict", "prompt": "Ratings: {{steps.rate.items}}\nThe verdict.", "output": "json",
       "constraint": {"kind": "json", "schema": {"type": "object", "properties": {"buy": {"type": "boolean"}},
         "required": ["buy"]}}, "max_tokens": 200, "temperature": 1.0}
    ]})");
  Node decode("decode", tiny, "tcp", 16);
  Node prefill("prefill", tiny, "tcp", 16);
  RouterProcess router(tiny, {prefill.port}, {decode.port}, {"--workflows", dir.string()});
  const CurlReply reply = router.post("/v1/workflows/verdicts", sample_request().dump(), {"--max-time", "120"});
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  const json result = json::parse(reply.body);
  // The fan-out: one value per call, each as the schema says (its keys in the schema's order).
  const json& rates = result["output"]["rate"];
  REQUIRE(rates.is_array());
  REQUIRE(rates.size() == 2);
  for (size_t i = 0; i < rates.size(); ++i) {
    const json& call = result["steps"][0]["calls"][i];
    REQUIRE(call["status"] == "ok");
    CHECK(call["value"] == rates[i]);
    CHECK(json::parse(call["text"].get<std::string>()) == rates[i]);
    REQUIRE(rates[i].is_object());
    CHECK(rates[i].size() == 2);
    const int score = rates[i]["score"].get<int>();
    CHECK((score >= 1 && score <= 3));
    CHECK(rates[i]["keep"].is_boolean());
    CHECK(call["text"].get<std::string>().find("\"score\"") < call["text"].get<std::string>().find("\"keep\""));
  }
  // A step run once: its value itself.
  const json& verdict = result["output"]["verdict"];
  REQUIRE(verdict.is_object());
  CHECK(verdict["buy"].is_boolean());
  CHECK(decode.shows_used(0));
  // The decode node's JSON masks: some computed, some found again (the two rating calls share a schema).
  CHECK(eventually([&] { return decode.metric("recgpt_json_mask_lookups_total\\{.*result=\"miss\".*\\}") > 0; }));
  CHECK(eventually([&] { return decode.metric("recgpt_json_mask_lookups_total\\{.*result=\"hit\".*\\}") > 0; }));
}

}  // namespace
}  // namespace recgpt::testing
