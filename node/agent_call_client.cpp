#include "node/agent_call_client.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/rpc/listener.h"
#include "engine/block_hash.h"
#include "node/node_protocol.h"

namespace recgpt::node {

namespace asio = boost::asio;

namespace {

control::SamplingParams sampling_to_proto(const AgentCall& call) {
  control::SamplingParams proto;
  proto.set_temperature(call.sampling.temperature);
  proto.set_top_k(static_cast<uint32_t>(call.sampling.top_k));
  proto.set_top_p(call.sampling.top_p);
  proto.set_repetition_penalty(call.sampling.repetition_penalty);
  proto.set_seed(call.sampling.seed);
  proto.set_max_tokens(static_cast<uint32_t>(call.max_new_tokens));
  for (int32_t token : call.stop_tokens) proto.add_stop_token_ids(static_cast<uint32_t>(token));
  return proto;
}

}  // namespace

asio::awaitable<Result<std::unique_ptr<AgentCallClient>>> AgentCallClient::connect(
    const std::string& host, uint16_t prefill_port, uint16_t decode_port, const std::string& model_fingerprint,
    int32_t entity_token, int entity_dim, rpc::Deadline deadline) {
  auto streams = std::make_shared<std::unordered_map<uint64_t, Stream>>();
  // The decode connection's frames are token chunks of our streams; the map outlives the client if need be.
  auto on_decode_frame = [streams](control::Envelope envelope) {
    if (!envelope.has_token_chunk()) return;
    Stream& stream = (*streams)[envelope.request_id()];
    stream.chunks.push_back(envelope.token_chunk());
    if (stream.wake) stream.wake->cancel();
  };
  control::Hello decode_hello;
  auto decode = co_await greet(host, decode_port, control::ROLE_ROUTER, model_fingerprint, on_decode_frame, deadline,
                               &decode_hello);
  if (!decode.is_ok()) co_return decode.status();
  auto prefill = co_await greet(
      host, prefill_port, control::ROLE_ROUTER, model_fingerprint, [](control::Envelope) {}, deadline, nullptr);
  if (!prefill.is_ok()) {
    (*decode)->close(Status::ok());
    co_return prefill.status();
  }
  std::unique_ptr<AgentCallClient> client(new AgentCallClient(*prefill, *decode, entity_token, entity_dim));
  client->decode_hello_ = std::move(decode_hello);
  client->streams_ = std::move(streams);
  co_return client;
}

AgentCallClient::~AgentCallClient() { close(); }

void AgentCallClient::close() {
  prefill_->close(Status::ok());
  decode_->close(Status::ok());
}

asio::awaitable<Result<control::Envelope>> AgentCallClient::reserve(const AgentCall& call) {
  control::Envelope envelope;
  control::ReserveKv& body = *envelope.mutable_reserve_kv();
  size_t entity = 0;
  for (int32_t token : call.prompt) {
    body.add_token_ids(static_cast<uint32_t>(token));
    if (token != entity_token_) continue;
    if (!call.entity_ids.empty()) {
      if (entity >= call.entity_ids.size()) co_return invalid_argument("the prompt has more entity tokens than ids");
      body.add_entity_keys(entity_key_from_id(call.entity_ids[entity++]));
      continue;
    }
    const size_t begin = entity++ * static_cast<size_t>(entity_dim_);
    if (begin + static_cast<size_t>(entity_dim_) > call.entity_vectors.size()) {
      co_return invalid_argument("the prompt has more entity tokens than entity vectors");
    }
    body.add_entity_keys(entity_key_from_vector(std::span(call.entity_vectors).subspan(begin, entity_dim_)));
  }
  body.set_max_tokens(static_cast<uint32_t>(call.max_new_tokens));
  body.set_deadline_unix_ms(call.reservation_deadline_unix_ms);
  co_return co_await decode_->call(envelope, rpc::Clock::now() + std::chrono::seconds(30));
}

asio::awaitable<Result<control::Envelope>> AgentCallClient::prefill(const AgentCall& call,
                                                                    const control::Reservation& reservation,
                                                                    rpc::Deadline deadline) {
  control::Envelope envelope;
  control::PrefillRequest& body = *envelope.mutable_prefill_request();
  size_t entity = 0;
  for (size_t position = 0; position < call.prompt.size(); ++position) {
    body.add_token_ids(static_cast<uint32_t>(call.prompt[position]));
    if (call.prompt[position] != entity_token_) continue;
    control::EntityInput& input = *body.add_entities();
    input.set_position(static_cast<uint32_t>(position));
    if (!call.entity_ids.empty()) {
      if (entity < call.entity_ids.size()) input.set_entity_id(call.entity_ids[entity]);
      ++entity;
      continue;
    }
    const size_t begin = entity++ * static_cast<size_t>(entity_dim_);
    for (int i = 0; i < entity_dim_ && begin + static_cast<size_t>(i) < call.entity_vectors.size(); ++i) {
      input.mutable_vector()->add_values(call.entity_vectors[begin + static_cast<size_t>(i)]);
    }
  }
  *body.mutable_sampling() = sampling_to_proto(call);
  body.set_reservation_id(reservation.reservation_id());
  body.set_cached_tokens(reservation.cached_tokens());
  *body.mutable_destination_block_ids() = reservation.block_ids();
  body.set_decode_transfer_endpoint(decode_hello_.transfer_endpoint());
  body.set_decode_kv_region_key(decode_hello_.kv_region_key());
  *body.mutable_decode_kv_layout() = decode_hello_.kv_layout();
  co_return co_await prefill_->call(envelope, deadline);
}

Result<uint64_t> AgentCallClient::start(const AgentCall& call, uint64_t reservation_id, uint32_t first_token) {
  control::Envelope envelope;
  const uint64_t id = decode_->new_request_id();
  envelope.set_request_id(id);
  envelope.mutable_start_decode()->set_reservation_id(reservation_id);
  envelope.mutable_start_decode()->set_first_token(first_token);
  *envelope.mutable_start_decode()->mutable_sampling() = sampling_to_proto(call);
  (*streams_)[id];
  RECGPT_RETURN_IF_ERROR(decode_->send(envelope));
  return id;
}

Status AgentCallClient::cancel(uint64_t request_id) {
  control::Envelope envelope;
  envelope.set_request_id(request_id);
  envelope.mutable_cancel()->set_reason("cancelled by the caller");
  return decode_->send(envelope);
}

asio::awaitable<Result<control::TokenChunk>> AgentCallClient::next_chunk(uint64_t id, rpc::Deadline deadline) {
  auto streams = streams_;
  for (;;) {
    Stream& stream = (*streams)[id];
    if (!stream.chunks.empty()) {
      control::TokenChunk chunk = std::move(stream.chunks.front());
      stream.chunks.pop_front();
      if (chunk.finished()) streams->erase(id);
      co_return chunk;
    }
    if (!decode_->is_open()) co_return unavailable("the decode node went away: " + decode_->close_reason().message());
    if (rpc::Clock::now() >= deadline) co_return deadline_exceeded("no token chunk before the deadline");
    // Wake at the deadline, at a chunk, or every 100 ms to notice a closed connection.
    stream.wake = std::make_unique<asio::steady_timer>(
        co_await asio::this_coro::executor, std::min(deadline, rpc::Clock::now() + std::chrono::milliseconds(100)));
    boost::system::error_code ignored;
    co_await stream.wake->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    (*streams)[id].wake.reset();
  }
}

}  // namespace recgpt::node
