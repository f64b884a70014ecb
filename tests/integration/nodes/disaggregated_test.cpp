// One prefill process and one decode process on 127.0.0.1, joined by ucx (tcp, or shared memory), driven by
// this test over the control protocol as the router will: reserve on decode, prefill into the reservation,
// start decoding, stream tokens. Greedy output must equal the colocated engine's token for token, with and
// without entity tokens; a prompt sharing a prefix is computed once on the prefill node and not moved again
// when the decode node holds it. Every wait has a deadline; the processes are killed at the end.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <cmath>

#include "engine/entity_store.h"
#include "node/agent_call_client.h"
#include "node/node_protocol.h"
#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {
TEST_CASE(
    "prefill -> decode over ucx gives the colocated greedy output, with and without entities, and reuses "
    "a shared prefix on both nodes",
    "[nodes][disaggregated]") {
  const std::string tls = GENERATE(as<std::string>{}, "tcp", "posix,cma,self");
  INFO("tls=" << tls);
  TinyModel tiny;
  Node decode_node("decode", tiny, tls);
  Node prefill_node("prefill", tiny, tls);
  const ModelConfig& config = tiny.model->config();
  const int32_t entity_token = config.entity_adaptor->entity_token_id;
  const int entity_dim = config.entity_adaptor->entity_dim;

  GenerationRequest plain;
  for (int i = 0; i < 53; ++i) plain.prompt.push_back(3 + (i * 29) % 180);
  plain.max_new_tokens = 12;
  // Greedy with a repetition penalty: a random tiny model with tied embeddings mostly predicts its input token,
  // which would make the output blind to the KV; the penalty makes every choice depend on the whole distribution.
  plain.sampling.repetition_penalty = 1.8f;
  GenerationRequest shared = plain;  // the same first 48 tokens (3 full blocks), another tail
  shared.prompt.resize(48);
  for (int i = 0; i < 17; ++i) shared.prompt.push_back(90 + i);
  GenerationRequest with_entities;
  with_entities.prompt = {7, 8, entity_token, 9, 10, 11, entity_token, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22};
  with_entities.entity_vectors.resize(2 * entity_dim);
  for (size_t i = 0; i < with_entities.entity_vectors.size(); ++i) {
    with_entities.entity_vectors[i] = std::sin(0.3f * static_cast<float>(i));
  }
  with_entities.max_new_tokens = 9;
  with_entities.sampling.repetition_penalty = 1.8f;

  drive_pair(tiny, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    CallResult first = co_await driver.run(plain);
    CHECK(first.tokens == colocated_tokens(*tiny.model, plain));
    CHECK(first.prefill.tokens_computed() == 53);
    CHECK(first.decode_cached_tokens == 0);

    CallResult second = co_await driver.run(shared);
    CHECK(second.tokens == colocated_tokens(*tiny.model, shared));
    CHECK(second.prefill.tokens_cached() == 48);  // computed once, on the prefill node
    CHECK(second.prefill.tokens_computed() == 17);
    CHECK(second.decode_cached_tokens == 48);  // and not moved again
    CHECK(second.prefill.kv_bytes_moved() < first.prefill.kv_bytes_moved());
    for (int tail = 0; tail < 2; ++tail) {  // more agents of the same user context
      GenerationRequest another = shared;
      for (int i = 48; i < 65; ++i) another.prompt[static_cast<size_t>(i)] = 300 + 20 * tail + i;
      CallResult more = co_await driver.run(another);
      CHECK(more.tokens == colocated_tokens(*tiny.model, another));
    }
    // From the prefill node's counters: the context was computed once (53 tokens, then 17 per other agent)
    // and moved once, only the prompt's rows of a partial last block (53 token rows, then 17 per other agent).
    const kv::KvLayoutDescription layout = node::kv_layout_from_proto(driver.decode_hello().kv_layout());
    const double row_bytes = 2.0 * layout.num_layers * static_cast<double>(layout.block_bytes()) / layout.block_size;
    CHECK(prefill_node.metric("recgpt_prefill_tokens_total\\{.*kind=\"computed\".*\\}") == 53 + 3 * 17);
    CHECK(prefill_node.metric("recgpt_prefill_tokens_total\\{.*kind=\"cached\".*\\}") == 3 * 48);
    CHECK(prefill_node.metric("recgpt_kv_transfer_bytes_total\\{.*outcome=\"ok\".*\\}") == (53 + 3 * 17) * row_bytes);

    CallResult entities = co_await driver.run(with_entities);
    CHECK(entities.tokens == colocated_tokens(*tiny.model, with_entities));
  });
}

// Sends every request at once over one driver (so the prefill node finds them queued together); the results in
// request order.
std::vector<CallResult> run_concurrently(const TinyModel& tiny, const Node& decode_node, const Node& prefill_node,
                                         const std::vector<GenerationRequest>& requests) {
  const ModelConfig& config = tiny.model->config();
  asio::io_context io;
  size_t finished = 0;
  std::vector<CallResult> results(requests.size());
  std::map<uint64_t, std::vector<control::TokenChunk>> chunks;
  std::unique_ptr<Driver> driver;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        control::Hello decode_hello;
        auto decode = co_await greet(decode_node.port, tiny.fingerprint, &chunks, &decode_hello);
        control::Hello prefill_hello;
        auto prefill = co_await greet(prefill_node.port, tiny.fingerprint, nullptr, &prefill_hello);
        driver = std::make_unique<Driver>(prefill, decode, decode_hello, prefill_hello, chunks,
                                          config.entity_adaptor->entity_token_id, config.entity_adaptor->entity_dim);
        asio::steady_timer all_done(io, Clock::time_point::max());
        for (size_t c = 0; c < requests.size(); ++c) {
          asio::co_spawn(
              io,
              [&, c]() -> asio::awaitable<void> {
                results[c] = co_await driver->run(requests[c]);
                if (++finished == requests.size()) all_done.cancel();
              },
              asio::detached);
        }
        boost::system::error_code ignored;
        co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        decode->close(Status::ok());
        prefill->close(Status::ok());
      },
      asio::detached);
  io.run_for(seconds(120));
  REQUIRE(finished == requests.size());
  return results;
}

TEST_CASE("concurrent calls are prefilled in shared batches and each still decodes to the colocated greedy output",
          "[nodes][disaggregated][batching]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  constexpr int kCalls = 6;
  std::vector<GenerationRequest> requests(kCalls);
  for (int c = 0; c < kCalls; ++c) {
    for (int i = 0; i < 30 + 7 * c; ++i) requests[c].prompt.push_back(20 + (i * (c + 3)) % 150);
    requests[c].max_new_tokens = 8;
    requests[c].sampling.repetition_penalty = 1.8f;
  }
  const std::vector<CallResult> results = run_concurrently(tiny, decode_node, prefill_node, requests);
  for (int c = 0; c < kCalls; ++c) {
    INFO("call " << c);
    CHECK(results[static_cast<size_t>(c)].tokens == colocated_tokens(*tiny.model, requests[static_cast<size_t>(c)]));
  }
  const double batches = prefill_node.metric("recgpt_prefill_batches_total\\{.*\\}");
  INFO("forward passes for " << kCalls << " calls: " << batches);
  CHECK(batches >= 1);
  CHECK(batches < kCalls);
}

TEST_CASE(
    "seeded sampling prefilled on another node gives the colocated tokens, and so does a call continued "
    "from its first_draw",
    "[nodes][disaggregated][sampling]") {
  // The prefill node samples the first token with the generator's first output, the decode node the rest with
  // the following ones. A call continued after a node died carries its earlier tokens in the prompt and their
  // count as first_draw (the router's migration): its tokens are the rest of the uninterrupted call's.
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  GenerationRequest request;
  for (int i = 0; i < 40; ++i) request.prompt.push_back(11 + (i * 17) % 170);
  request.max_new_tokens = 16;
  request.sampling = {.temperature = 3.0f, .repetition_penalty = 1.3f, .seed = 17};  // flat: every draw matters
  const std::vector<int32_t> expected = colocated_tokens(*tiny.model, request);
  REQUIRE(expected.size() == 16);
  constexpr size_t kBefore = 5;
  GenerationRequest continued = request;
  continued.prompt.insert(continued.prompt.end(), expected.begin(), expected.begin() + kBefore);
  continued.max_new_tokens = 16 - static_cast<int>(kBefore);
  continued.sampling.first_draw = kBefore;
  drive_pair(tiny, decode_node, prefill_node, [&](Driver& driver) -> asio::awaitable<void> {
    CallResult whole = co_await driver.run(request);
    CHECK(whole.tokens == expected);
    CallResult rest = co_await driver.run(continued);
    CHECK(rest.tokens == std::vector<int32_t>(expected.begin() + kBefore, expected.end()));
  });
}

TEST_CASE("a prompt over the prefill step's token budget is computed in chunks, sharing steps with short ones",
          "[nodes][disaggregated][chunked]") {
  TinyModel tiny;
  constexpr int kBudget = 24;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp", 8, {"--max-batch-tokens", std::to_string(kBudget)});
  const int32_t entity_token = tiny.model->config().entity_adaptor->entity_token_id;
  const int entity_dim = tiny.model->config().entity_adaptor->entity_dim;
  std::vector<GenerationRequest> requests(3);
  int64_t total_tokens = 0;
  for (size_t c = 0; c < requests.size(); ++c) {
    const int length = c == 0 ? 150 : 20;
    for (int i = 0; i < length; ++i) requests[c].prompt.push_back(20 + (i * static_cast<int>(c + 5)) % 150);
    requests[c].max_new_tokens = 8;
    requests[c].sampling.repetition_penalty = 1.8f;
    total_tokens += length;
  }
  // Entity tokens in the long prompt, on both sides of chunk boundaries.
  for (int position : {10, 23, 24, 100}) requests[0].prompt[static_cast<size_t>(position)] = entity_token;
  for (int i = 0; i < 4 * entity_dim; ++i) requests[0].entity_vectors.push_back(0.01f * static_cast<float>(i % 97));
  const std::vector<CallResult> results = run_concurrently(tiny, decode_node, prefill_node, requests);
  for (size_t c = 0; c < requests.size(); ++c) {
    INFO("call " << c);
    CHECK(results[c].tokens == colocated_tokens(*tiny.model, requests[c]));
    CHECK(results[c].prefill.tokens_computed() == requests[c].prompt.size());
  }
  const double batches = prefill_node.metric("recgpt_prefill_batches_total\\{.*\\}");
  INFO("forward passes for " << total_tokens << " prompt tokens at " << kBudget << " a step: " << batches);
  CHECK(batches >= static_cast<double>((total_tokens + kBudget - 1) / kBudget));
  CHECK(prefill_node.shows_used(0));
  CHECK(decode_node.shows_used(0));
}

TEST_CASE("prompts that together overflow the prefill node's cache wait for blocks instead of failing",
          "[nodes][disaggregated][batching]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp", 1);  // 128 blocks: five of these 25-block prompts at a time
  std::vector<GenerationRequest> requests(8);
  for (size_t c = 0; c < requests.size(); ++c) {
    for (int i = 0; i < 400; ++i) requests[c].prompt.push_back(20 + (i * static_cast<int>(c + 3)) % 150);
    requests[c].max_new_tokens = 4;
    requests[c].sampling.repetition_penalty = 1.8f;
  }
  const std::vector<CallResult> results = run_concurrently(tiny, decode_node, prefill_node, requests);
  for (size_t c = 0; c < requests.size(); ++c) {
    INFO("call " << c);
    CHECK(results[c].tokens == colocated_tokens(*tiny.model, requests[c]));
  }
  CHECK(prefill_node.shows_used(0));
}

TEST_CASE("colocated mode (recgpt serve) gives the colocated engine's greedy output over the same protocol",
          "[nodes][colocated]") {
  TinyModel tiny;
  ColocatedNodes nodes(tiny);
  const ModelConfig& config = tiny.model->config();
  GenerationRequest request;
  for (int i = 0; i < 41; ++i) request.prompt.push_back(11 + (i * 31) % 170);
  request.max_new_tokens = 10;
  request.sampling.repetition_penalty = 1.8f;
  asio::io_context io;
  bool finished = false;
  std::map<uint64_t, std::vector<control::TokenChunk>> chunks;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        control::Hello decode_hello;
        auto decode = co_await greet(nodes.decode_port, tiny.fingerprint, &chunks, &decode_hello);
        control::Hello prefill_hello;
        auto prefill = co_await greet(nodes.prefill_port, tiny.fingerprint, nullptr, &prefill_hello);
        CHECK(decode_hello.transfer_backend() == "local");
        Driver driver(prefill, decode, decode_hello, prefill_hello, chunks, config.entity_adaptor->entity_token_id,
                      config.entity_adaptor->entity_dim);
        CallResult result = co_await driver.run(request);
        CHECK(result.tokens == colocated_tokens(*tiny.model, request));
        decode->close(Status::ok());
        prefill->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(120));
  REQUIRE(finished);
}

TEST_CASE(
    "entities given by id, looked up in the prefill node's entity store, give the output of the same "
    "vectors given inline",
    "[nodes][colocated][entities]") {
  TinyModel tiny;
  const ModelConfig& config = tiny.model->config();
  const int32_t entity_token = config.entity_adaptor->entity_token_id;
  const int entity_dim = config.entity_adaptor->entity_dim;
  const std::vector<std::string> ids = {"item:1001", "query:red shoes", "item:77"};
  std::vector<float> vectors(ids.size() * static_cast<size_t>(entity_dim));
  for (size_t i = 0; i < vectors.size(); ++i) vectors[i] = std::cos(0.17f * static_cast<float>(i));
  const std::string store = (tiny.dir / "entities.bin").string();
  REQUIRE(write_entity_store(store, entity_dim, ids, vectors).is_ok());
  ColocatedNodes nodes(tiny, {"--entity-store", store});

  GenerationRequest expected_request;
  expected_request.prompt = {6, entity_token, 8, 9, entity_token, 10, 11, 12, 13, entity_token, 14, 15, 16, 17, 18};
  expected_request.max_new_tokens = 8;
  expected_request.sampling.repetition_penalty = 1.8f;
  auto opened = EntityStore::open(store);
  REQUIRE(opened.is_ok());
  REQUIRE(attach_entities_by_id(expected_request, config, *opened, ids).is_ok());
  const std::vector<int32_t> expected = colocated_tokens(*tiny.model, expected_request);

  node::AgentCall call;
  call.prompt = expected_request.prompt;
  call.entity_ids = ids;
  call.max_new_tokens = expected_request.max_new_tokens;
  call.sampling.repetition_penalty = 1.8f;
  asio::io_context io;
  std::vector<int32_t> tokens;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto client = co_await node::AgentCallClient::connect("127.0.0.1", nodes.prefill_port, nodes.decode_port,
                                                              tiny.fingerprint, entity_token, entity_dim,
                                                              Clock::now() + seconds(10));
        REQUIRE(client.is_ok());
        auto reserved = co_await (*client)->reserve(call);
        REQUIRE(reserved.is_ok());
        REQUIRE(reserved->reserve_kv_reply().has_reservation());
        auto done =
            co_await (*client)->prefill(call, reserved->reserve_kv_reply().reservation(), Clock::now() + seconds(30));
        REQUIRE(done.is_ok());
        INFO(done->DebugString());
        REQUIRE(done->has_prefill_done());
        tokens.push_back(static_cast<int32_t>(done->prefill_done().first_token()));
        auto stream = (*client)->start(call, reserved->reserve_kv_reply().reservation().reservation_id(),
                                       done->prefill_done().first_token());
        REQUIRE(stream.is_ok());
        for (;;) {
          auto chunk = co_await (*client)->next_chunk(*stream, Clock::now() + seconds(30));
          REQUIRE(chunk.is_ok());
          for (uint32_t token : chunk->token_ids()) tokens.push_back(static_cast<int32_t>(token));
          if (chunk->finished()) break;
        }
        (*client)->close();
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(120));
  REQUIRE(finished);
  CHECK(tokens == expected);
}

}  // namespace
}  // namespace recgpt::testing
