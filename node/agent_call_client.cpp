#include "node/agent_call_client.h"

#include <chrono>

namespace recgpt::node {

namespace asio = boost::asio;

asio::awaitable<Result<std::unique_ptr<AgentCallClient>>> AgentCallClient::connect(
    const std::string& host, uint16_t prefill_port, uint16_t decode_port, const std::string& model_fingerprint,
    int32_t entity_token, int entity_dim, rpc::Deadline deadline) {
  auto decode = co_await NodeLink::open(host, decode_port, control::ROLE_ROUTER, model_fingerprint, deadline);
  if (!decode.is_ok()) co_return decode.status();
  auto prefill = co_await NodeLink::open(host, prefill_port, control::ROLE_ROUTER, model_fingerprint, deadline);
  if (!prefill.is_ok()) co_return prefill.status();
  co_return std::unique_ptr<AgentCallClient>(
      new AgentCallClient(*prefill, *decode, EntityShape{entity_token, entity_dim}));
}

AgentCallClient::~AgentCallClient() { close(); }

void AgentCallClient::close() {
  prefill_->close();
  decode_->close();
}

asio::awaitable<Result<control::Envelope>> AgentCallClient::reserve(const AgentCall& call) {
  RECGPT_CO_RETURN_IF_ERROR(check_entities(call, shape_));
  co_return co_await decode_->call(make_reserve(call, shape_), rpc::Clock::now() + std::chrono::seconds(30));
}

asio::awaitable<Result<control::Envelope>> AgentCallClient::prefill(const AgentCall& call,
                                                                    const control::Reservation& reservation,
                                                                    rpc::Deadline deadline) {
  RECGPT_CO_RETURN_IF_ERROR(check_entities(call, shape_));
  RECGPT_CO_RETURN_IF_ERROR(decode_->send(make_prefill_attempt(reservation.reservation_id(), 1, prefill_->hello())));
  co_return co_await prefill_->call(make_prefill_request(call, shape_, reservation, decode_->hello(), 1), deadline);
}

Result<uint64_t> AgentCallClient::start(const AgentCall& call, uint64_t reservation_id, uint32_t first_token) {
  return decode_->start_stream(make_start(call, reservation_id, first_token, 1, 1));
}

Status AgentCallClient::cancel(uint64_t request_id) {
  return decode_->send(make_cancel(request_id, "cancelled by the caller"));
}

asio::awaitable<Result<control::TokenChunk>> AgentCallClient::next_chunk(uint64_t stream, rpc::Deadline deadline) {
  co_return co_await decode_->next_chunk(stream, deadline);
}

}  // namespace recgpt::node
