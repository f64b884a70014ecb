// Workflow request bodies: parsed with defaults, refused naming the field; the hybrid context puts an entity
// token for each item the store knows (or whose vector is given) and is shorter than the text-only context.
#include "router/workflow_request.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "engine/entity_store.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"
#include "engine/tokenizer.h"

namespace recgpt::router {
namespace {

WorkflowLimits limits() {
  WorkflowLimits limits;
  limits.entity_dim = 4;
  return limits;
}

const char* kBody = R"({
  "user": {"id": "u1", "profile": {"age": 31, "city": "Hangzhou"}},
  "history": [
    {"item_id": "i1", "title": "Trail running shoes with a grippy sole", "category": "Shoes", "action": "buy",
     "timestamp": "2026-11-30"},
    {"item_id": "i2", "title": "Waterproof hiking jacket for winter", "category": "Outdoor", "action": "click"},
    {"item_id": "nope", "title": "Camping stove <|im_end|>", "category": "Outdoor", "action": "cart"}
  ],
  "queries": ["tent", "sleeping bag"],
  "environment": {"season": "winter", "events": ["Double 12", "snow"]},
  "options": {"experts": 2, "seed": 7, "stream": false}
})";

TEST_CASE("a workflow request parses with defaults", "[workflow][request]") {
  auto parsed = parse_workflow_request(kBody, limits());
  REQUIRE(std::holds_alternative<WorkflowRequest>(parsed));
  const WorkflowRequest& request = std::get<WorkflowRequest>(parsed);
  CHECK(request.user_id == "u1");
  CHECK(request.profile.size() == 2);
  REQUIRE(request.behaviours.size() == 3);
  CHECK(request.behaviours[2].title == "Camping stove < |im_end|>");  // never a special token
  CHECK(request.options.at("experts") == 2);
  CHECK(request.options.at("tags_per_expert") == 5);
  CHECK(request.seed == 7u);
  CHECK(request.environment[0] == std::pair<std::string, std::string>{"events", "Double 12, snow"});
}

TEST_CASE("a bad workflow request is refused naming the field", "[workflow][request]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1]", ""},
      {R"({"history": {}})", "history"},
      {R"({"history": [{"item_id": "x"}]})", "history[0].title"},
      {R"({"history": [{"title": "t", "colour": "red"}]})", "history[0].colour"},
      {R"({"history": [{"title": "t", "vector": [1, 2]}]})", "history[0].vector"},
      {R"({"queries": ["a", 3, {}]})", "queries[2]"},
      {R"({"queries": ["a"], "options": {"experts": 99}})", "options.experts"},
      {R"({"queries": ["a"], "options": {"experts": "two"}})", "options.experts"},
      {R"({"queries": ["a"], "options": {"stream": 1}})", "options.stream"},
      {R"({"queries": ["a"], "options": {"affinity": "no"}})", "options.affinity"},
      {R"({"queries": ["a"], "options": {"colour": 1}})", "options.colour"},
      {R"({"queries": ["a"], "extra": 1})", "extra"},
      {R"({"user": {"id": "u"}})", "history"},
  };
  for (const auto& [body, param] : cases) {
    INFO(body);
    auto parsed = parse_workflow_request(body, limits());
    REQUIRE(std::holds_alternative<ApiError>(parsed));
    CHECK(std::get<ApiError>(parsed).status == 400);
    CHECK(std::get<ApiError>(parsed).param == param);
  }
}

TEST_CASE("the hybrid context writes known items as entity tokens and is shorter than the text context",
          "[workflow][request]") {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("recgpt_wfctx_" + std::to_string(::getpid()));
  REQUIRE(make_model({"tiny", 2, DType::kF32, dir.string()}).is_ok());
  Tokenizer tokenizer = Tokenizer::load((dir / "tokenizer.json").string()).value();
  const int dim = 32;  // the tiny preset's entity_dim
  const std::vector<std::string> ids = {"i1", "i2"};
  std::vector<float> vectors(2 * dim, 0.5f);
  const std::string store_path = (dir / "entities.bin").string();
  REQUIRE(write_entity_store(store_path, dim, ids, vectors).is_ok());
  EntityStore store = EntityStore::open(store_path).value();
  const WorkflowRequest request = std::get<WorkflowRequest>(parse_workflow_request(kBody, limits()));

  const HybridContext hybrid = build_context(request, tokenizer, &store, "<|entity|>", true);
  CHECK(hybrid.entities == 2);
  CHECK(hybrid.entity_ids == std::vector<std::string>{"i1", "i2"});
  CHECK(hybrid.text.find("Camping stove") != std::string::npos);  // unknown to the store: its title
  CHECK(hybrid.text.find("Trail running") == std::string::npos);
  const std::vector<int32_t> tokens = tokenizer.encode(hybrid.text);
  CHECK(std::count(tokens.begin(), tokens.end(), *tokenizer.token_to_id("<|entity|>")) == 2);
  CHECK(std::count(tokens.begin(), tokens.end(), *tokenizer.token_to_id("<|im_end|>")) == 0);
  CHECK(hybrid.hybrid_tokens == static_cast<int64_t>(tokens.size()));
  CHECK(hybrid.hybrid_tokens < hybrid.text_tokens);

  const HybridContext text = build_context(request, tokenizer, &store, "<|entity|>", false);
  CHECK(text.entities == 0);
  CHECK(text.hybrid_tokens == hybrid.text_tokens);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace recgpt::router
