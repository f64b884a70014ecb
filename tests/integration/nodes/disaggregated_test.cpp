// One prefill process and one decode process on 127.0.0.1, joined by ucx (tcp, or shared memory), driven by
// this test over the control protocol as the router will: reserve on decode, prefill into the reservation,
// start decoding, stream tokens. Greedy output must equal the colocated engine's token for token, with and
// without entity tokens; a prompt sharing a prefix is computed once on the prefill node and not moved again
// when the decode node holds it. Every wait has a deadline; the processes are killed at the end.
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>

#include "common/rpc/connection.h"
#include "common/subprocess.h"
#include "engine/block_hash.h"
#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "engine/model_maker.h"

namespace recgpt {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

struct TinyModel {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("recgpt_disaggregated_" + std::to_string(::getpid()));
  std::unique_ptr<ModelFiles> model;
  std::string fingerprint;
  TinyModel() {
    REQUIRE(make_model({"tiny", 6, DType::kF32, dir.string()}).is_ok());
    model = ModelFiles::open(dir.string()).value();
    fingerprint = model_fingerprint(*model).value();
  }
  ~TinyModel() { std::filesystem::remove_all(dir); }
};

// A `recgpt prefill` or `recgpt decode` child and the control port it printed.
struct Node {
  Subprocess process;
  uint16_t port = 0;
  Node(const std::string& role, const TinyModel& model, const std::string& tls) {
    auto spawned =
        Subprocess::spawn({RECGPT_PATH, role, "--model", model.dir.string(), "--kv-cache-mib", "8", "--threads", "1",
                           "--transfer-setting", "tls=" + tls, "--node-id", role + "-test"});
    REQUIRE(spawned.is_ok());
    process = std::move(spawned).value();
    auto line = process.read_line(Clock::now() + seconds(30));
    REQUIRE(line.is_ok());
    std::smatch match;
    REQUIRE(std::regex_search(*line, match, std::regex(" port=(\\d+)")));
    port = static_cast<uint16_t>(std::stoi(match[1]));
  }
  ~Node() {
    process.kill(SIGTERM);
    (void)process.wait(Clock::now() + seconds(10));
  }
};

struct Call {
  GenerationRequest request;  // prompt, entity vectors, max_new_tokens (greedy)
};

struct CallResult {
  std::vector<int32_t> tokens;
  uint32_t decode_cached_tokens = 0;
  control::PrefillDone prefill;
};

// The router's part of one agent call, over two started connections to nodes that answered their hello.
class Driver {
 public:
  Driver(std::shared_ptr<rpc::Connection> prefill, std::shared_ptr<rpc::Connection> decode, control::Hello decode_hello,
         std::map<uint64_t, std::vector<control::TokenChunk>>& chunks)
      : prefill_(std::move(prefill)),
        decode_(std::move(decode)),
        decode_hello_(std::move(decode_hello)),
        chunks_(chunks) {}

  asio::awaitable<CallResult> run(const GenerationRequest& request, int32_t entity_token, int entity_dim) {
    CallResult result;
    control::Envelope reserve;
    for (int32_t token : request.prompt) reserve.mutable_reserve_kv()->add_token_ids(static_cast<uint32_t>(token));
    int entity = 0;
    for (int32_t token : request.prompt) {
      if (token != entity_token) continue;
      std::span<const float> vector = std::span(request.entity_vectors).subspan(entity++ * entity_dim, entity_dim);
      reserve.mutable_reserve_kv()->add_entity_keys(entity_key_from_vector(vector));
    }
    reserve.mutable_reserve_kv()->set_max_tokens(static_cast<uint32_t>(request.max_new_tokens));
    auto reserved = co_await decode_->call(reserve, Clock::now() + seconds(20));
    REQUIRE(reserved.is_ok());
    INFO(reserved->DebugString());
    REQUIRE(reserved->reserve_kv_reply().has_reservation());
    const control::Reservation& reservation = reserved->reserve_kv_reply().reservation();
    result.decode_cached_tokens = reservation.cached_tokens();

    control::Envelope prefill;
    control::PrefillRequest& body = *prefill.mutable_prefill_request();
    *body.mutable_token_ids() = reserve.reserve_kv().token_ids();
    entity = 0;
    for (size_t position = 0; position < request.prompt.size(); ++position) {
      if (request.prompt[position] != entity_token) continue;
      control::EntityInput& input = *body.add_entities();
      input.set_position(static_cast<uint32_t>(position));
      for (int i = 0; i < entity_dim; ++i)
        input.mutable_vector()->add_values(request.entity_vectors[entity * entity_dim + i]);
      ++entity;
    }
    body.mutable_sampling()->set_repetition_penalty(request.sampling.repetition_penalty);
    body.set_reservation_id(reservation.reservation_id());
    body.set_cached_tokens(reservation.cached_tokens());
    *body.mutable_destination_block_ids() = reservation.block_ids();
    body.set_decode_transfer_endpoint(decode_hello_.transfer_endpoint());
    body.set_decode_kv_region_key(decode_hello_.kv_region_key());
    *body.mutable_decode_kv_layout() = decode_hello_.kv_layout();
    auto done = co_await prefill_->call(prefill, Clock::now() + seconds(60));
    REQUIRE(done.is_ok());
    INFO(done->DebugString());
    REQUIRE(done->has_prefill_done());
    result.prefill = done->prefill_done();
    result.tokens.push_back(static_cast<int32_t>(result.prefill.first_token()));

    control::Envelope start;
    const uint64_t id = decode_->new_request_id();
    start.set_request_id(id);
    start.mutable_start_decode()->set_reservation_id(reservation.reservation_id());
    start.mutable_start_decode()->set_first_token(result.prefill.first_token());
    start.mutable_start_decode()->mutable_sampling()->set_repetition_penalty(request.sampling.repetition_penalty);
    REQUIRE(decode_->send(start).is_ok());
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (int i = 0; i < 6000; ++i) {
      const auto& stream = chunks_[id];
      if (!stream.empty() && (stream.back().finished() || !decode_->is_open())) break;
      wait.expires_after(milliseconds(10));
      co_await wait.async_wait(asio::use_awaitable);
    }
    const auto& stream = chunks_[id];
    REQUIRE(!stream.empty());
    REQUIRE(stream.back().finished());
    CHECK(stream.back().finish_reason() == "length");
    for (const control::TokenChunk& chunk : stream) {
      for (uint32_t token : chunk.token_ids()) result.tokens.push_back(static_cast<int32_t>(token));
    }
    co_return result;
  }

 private:
  std::shared_ptr<rpc::Connection> prefill_;
  std::shared_ptr<rpc::Connection> decode_;
  control::Hello decode_hello_;
  std::map<uint64_t, std::vector<control::TokenChunk>>& chunks_;
};

std::vector<int32_t> colocated_greedy(const ModelFiles& model, const GenerationRequest& request) {
  auto generator = Generator::create(model, {}).value();
  REQUIRE(generator->add(request).is_ok());
  std::vector<int32_t> tokens;
  for (int step = 0; step < 500 && !generator->idle(); ++step) {
    auto produced = generator->step();
    REQUIRE(produced.is_ok());
    for (const StepToken& token : *produced) {
      if (token.token >= 0) tokens.push_back(token.token);
    }
  }
  return tokens;
}

asio::awaitable<std::shared_ptr<rpc::Connection>> greet(uint16_t port, const std::string& fingerprint,
                                                        std::map<uint64_t, std::vector<control::TokenChunk>>* chunks,
                                                        control::Hello* hello) {
  auto connection = co_await rpc::connect("127.0.0.1", port, Clock::now() + seconds(10));
  REQUIRE(connection.is_ok());
  (*connection)
      ->start(
          [chunks](control::Envelope envelope) {
            if (chunks != nullptr && envelope.has_token_chunk())
              (*chunks)[envelope.request_id()].push_back(envelope.token_chunk());
          },
          [](const Status&) {});
  control::Envelope mine;
  mine.mutable_hello()->set_role(control::ROLE_ROUTER);
  mine.mutable_hello()->set_model_fingerprint(fingerprint);
  mine.mutable_hello()->set_protocol_version(1);
  auto reply = co_await (*connection)->call(mine, Clock::now() + seconds(10));
  REQUIRE(reply.is_ok());
  REQUIRE(reply->has_hello());
  if (hello != nullptr) *hello = reply->hello();
  co_return *connection;
}

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

  asio::io_context io;
  bool finished = false;
  std::map<uint64_t, std::vector<control::TokenChunk>> chunks;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        control::Hello decode_hello;
        auto decode = co_await greet(decode_node.port, tiny.fingerprint, &chunks, &decode_hello);
        auto prefill = co_await greet(prefill_node.port, tiny.fingerprint, nullptr, nullptr);
        Driver driver(prefill, decode, decode_hello, chunks);

        CallResult first = co_await driver.run(plain, entity_token, entity_dim);
        CHECK(first.tokens == colocated_greedy(*tiny.model, plain));
        CHECK(first.prefill.tokens_computed() == 53);
        CHECK(first.decode_cached_tokens == 0);

        CallResult second = co_await driver.run(shared, entity_token, entity_dim);
        CHECK(second.tokens == colocated_greedy(*tiny.model, shared));
        CHECK(second.prefill.tokens_cached() == 48);  // computed once, on the prefill node
        CHECK(second.prefill.tokens_computed() == 17);
        CHECK(second.decode_cached_tokens == 48);  // and not moved again
        CHECK(second.prefill.kv_bytes_moved() < first.prefill.kv_bytes_moved());

        CallResult entities = co_await driver.run(with_entities, entity_token, entity_dim);
        CHECK(entities.tokens == colocated_greedy(*tiny.model, with_entities));
        decode->close(Status::ok());
        prefill->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(seconds(180));
  REQUIRE(finished);
}

}  // namespace
}  // namespace recgpt
