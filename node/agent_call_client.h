// The caller's side of agent calls against one (prefill node, decode node) pair, over the control protocol:
// reserve KV on the decode node, have the prefill node fill the reservation, start decoding, read the token
// stream. Two NodeLinks and the frames of node/agent_call.h; tests and `recgpt bench nodes` use it.
//
// Threading: one executor (the connections'); every method is called from it. Nothing blocks a thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "node/agent_call.h"
#include "node/node_link.h"

namespace recgpt::node {

class AgentCallClient {
 public:
  // Connects to both nodes and exchanges hellos (as a router, with `model_fingerprint`). `entity_token` and
  // `entity_dim` are the model's (entity keys are derived from the vectors as the nodes do).
  static boost::asio::awaitable<Result<std::unique_ptr<AgentCallClient>>> connect(
      const std::string& host, uint16_t prefill_port, uint16_t decode_port, const std::string& model_fingerprint,
      int32_t entity_token, int entity_dim, rpc::Deadline deadline);
  ~AgentCallClient();

  // The decode node's reply: a reservation, no room, or an Error frame.
  boost::asio::awaitable<Result<control::Envelope>> reserve(const AgentCall& call);
  // The prefill node's reply: PrefillDone or an Error frame; a failure when the node died or the deadline passed.
  // Each call is prefill attempt 1 of its reservation (this client does not retry).
  boost::asio::awaitable<Result<control::Envelope>> prefill(const AgentCall& call,
                                                            const control::Reservation& reservation,
                                                            rpc::Deadline deadline);
  // Starts decoding a filled reservation; the stream's request id.
  Result<uint64_t> start(const AgentCall& call, uint64_t reservation_id, uint32_t first_token);
  // Cancels the decode node's call with this request id (a reservation's or a stream's).
  Status cancel(uint64_t request_id);
  // The stream's next chunk; kDeadlineExceeded at the deadline, kUnavailable when the decode node went away.
  boost::asio::awaitable<Result<control::TokenChunk>> next_chunk(uint64_t stream, rpc::Deadline deadline);

  const control::Hello& decode_hello() const { return decode_->hello(); }
  void close();

 private:
  AgentCallClient(std::shared_ptr<NodeLink> prefill, std::shared_ptr<NodeLink> decode, EntityShape shape)
      : prefill_(std::move(prefill)), decode_(std::move(decode)), shape_(shape) {}

  std::shared_ptr<NodeLink> prefill_;
  std::shared_ptr<NodeLink> decode_;
  EntityShape shape_;
};

}  // namespace recgpt::node
