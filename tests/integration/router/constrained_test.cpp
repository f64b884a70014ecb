// Constrained decoding through the whole cluster: a completion with `allowed` lists only allowed strings (the
// prefill node constrains the first token, the decode node the rest), greedy and sampled, disaggregated and with
// the decode node prefilling locally; the decode node counts the masked steps and their time.
#include <nlohmann/json.hpp>
#include <set>

#include "tests/integration/router/router_fixtures.h"

namespace recgpt::testing {
namespace {

using nlohmann::json;

const std::vector<std::string> kAllowed = {"red dress",    "summer sale", "running shoes", "shoes", "blue jeans",
                                           "garden chair", "red"};

void check_list(const CurlReply& reply, int max_items) {
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  const json body = json::parse(reply.body);
  const std::string text = body["choices"][0]["text"];
  CHECK(body["choices"][0]["finish_reason"] == "stop");
  std::set<std::string> seen;
  size_t begin = 0;
  int items = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(begin, end - begin);
    if (!item.empty()) {
      CHECK(std::find(kAllowed.begin(), kAllowed.end(), item) != kAllowed.end());
      CHECK(seen.insert(item).second);
      ++items;
    }
    begin = end + 1;
  }
  CHECK(items >= 1);
  CHECK(items <= max_items);
}

TEST_CASE(
    "a completion with `allowed` lists only allowed strings, through prefill and decode nodes and with a "
    "local prefill",
    "[router][constrained]") {
  TinyModel tiny;
  Node decode("decode", tiny, "tcp", 8, {"--node-id", "decode-c"});
  Node prefill("prefill", tiny, "tcp", 8, {"--node-id", "prefill-c"});
  RouterProcess disaggregated(tiny, {prefill.port}, {decode.port});
  RouterProcess local(tiny, {}, {decode.port});
  for (const RouterProcess* router : {&disaggregated, &local}) {
    for (int call = 0; call < 6; ++call) {
      json request = {{"model", "recgpt"},
                      {"prompt", "Tags for a shopper who likes the outdoors, call " + std::to_string(call) + ":\n"},
                      {"max_tokens", 40},
                      {"allowed", kAllowed},
                      {"max_items", 1 + call % 3}};
      if (call == 0) {
        request["temperature"] = 0;
      } else {
        request["temperature"] = 1.0;
        request["seed"] = call;
      }
      check_list(router->post("/v1/completions", request.dump()), 1 + call % 3);
    }
  }
  CHECK(decode.metric("recgpt_constraint_steps_total\\{.*\\}") > 0);
  CHECK(decode.metric("recgpt_constraint_mask_seconds_total\\{.*\\}") > 0);
  CHECK(decode.metric("recgpt_decode_sampling_seconds_total\\{.*\\}") > 0);
  CHECK(decode.metric("recgpt_decode_local_prefills_total\\{.*\\}") == 6);
}

}  // namespace
}  // namespace recgpt::testing
