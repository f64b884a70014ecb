// A call's sampling parameters on the wire: what the router writes (node/agent_call.h) reads back the same on
// the nodes, and a peer's bad parameters are refused by name, never taken.
#include <catch2/catch.hpp>

#include "node/agent_call.h"
#include "node/node_protocol.h"

namespace recgpt::node {
namespace {

TEST_CASE("sampling parameters survive the wire, and a peer's bad ones are refused by name", "[node][sampling]") {
  AgentCall call;
  call.prompt = {1, 2, 3};
  call.sampling = {.temperature = 0.7f,
                   .top_k = 40,
                   .top_p = 0.9f,
                   .repetition_penalty = 1.1f,
                   .frequency_penalty = -0.5f,
                   .presence_penalty = 1.5f,
                   .seed = 99,
                   .first_draw = 4,
                   .logit_bias = {{7, -100.0f}, {12, 2.5f}},
                   .logprobs = true,
                   .top_logprobs = 3,
                   .min_tokens = 6};
  const control::Envelope start = make_start(call, 1, 5, 1, 1);
  Result<SamplingParams> read = sampling_from_proto(start.start_decode().sampling());
  REQUIRE(read.is_ok());
  CHECK(read->temperature == 0.7f);
  CHECK(read->top_k == 40);
  CHECK(read->frequency_penalty == -0.5f);
  CHECK(read->min_tokens == 6);
  CHECK(read->presence_penalty == 1.5f);
  CHECK(read->first_draw == 4);
  CHECK(read->logit_bias == call.sampling.logit_bias);
  CHECK(read->logprobs);
  CHECK(read->top_logprobs == 3);

  auto refused = [&](auto&& spoil) {
    control::SamplingParams proto = start.start_decode().sampling();
    spoil(proto);
    Result<SamplingParams> result = sampling_from_proto(proto);
    REQUIRE_FALSE(result.is_ok());
    CHECK(result.status().code() == StatusCode::kInvalidArgument);
    return result.status().message();
  };
  CHECK_THAT(refused([](auto& p) { p.add_logit_bias_values(1.0f); }), Catch::Contains("2 tokens but 3 values"));
  CHECK_THAT(refused([](auto& p) { p.set_logit_bias_tokens(0, 0x80000000u); }), Catch::Contains("negative"));
  CHECK_THAT(refused([](auto& p) { p.set_top_logprobs(21); }), Catch::Contains("top_logprobs"));
  CHECK_THAT(refused([](auto& p) { p.set_presence_penalty(3.0f); }), Catch::Contains("presence_penalty"));
  CHECK_THAT(refused([](auto& p) { p.set_temperature(-1.0f); }), Catch::Contains("temperature"));
}

}  // namespace
}  // namespace recgpt::node
