// The caller's side of agent calls against one (prefill node, decode node) pair, over the control protocol:
// reserve KV on the decode node, have the prefill node fill the reservation, start decoding, read the token
// stream. What the router will do per call; tests and `recgpt bench nodes` use it today.
//
// Threading: one executor (the connections'); every method is called from it. Nothing blocks a thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/rpc/connection.h"
#include "common/status.h"
#include "engine/sampler.h"

namespace recgpt::node {

struct AgentCall {
  std::vector<int32_t> prompt;
  std::vector<float> entity_vectors;    // [entity tokens of prompt, entity_dim], in prompt order
  std::vector<std::string> entity_ids;  // instead of vectors: ids the prefill node looks up in its entity store
  int32_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;
  uint64_t reservation_deadline_unix_ms = 0;  // 0: the decode node's default
};

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
  boost::asio::awaitable<Result<control::Envelope>> prefill(const AgentCall& call,
                                                            const control::Reservation& reservation,
                                                            rpc::Deadline deadline);
  // Starts decoding a filled reservation; the stream's request id.
  Result<uint64_t> start(const AgentCall& call, uint64_t reservation_id, uint32_t first_token);
  // Cancels the decode node's call with this request id (a reservation's or a stream's).
  Status cancel(uint64_t request_id);
  // The stream's next chunk; kDeadlineExceeded at the deadline, kUnavailable when the decode node went away.
  boost::asio::awaitable<Result<control::TokenChunk>> next_chunk(uint64_t stream, rpc::Deadline deadline);

  const control::Hello& decode_hello() const { return decode_hello_; }
  void close();

 private:
  struct Stream {
    std::deque<control::TokenChunk> chunks;
    std::unique_ptr<boost::asio::steady_timer> wake;  // cancelled when a chunk arrives
  };

  AgentCallClient(std::shared_ptr<rpc::Connection> prefill, std::shared_ptr<rpc::Connection> decode,
                  int32_t entity_token, int entity_dim)
      : prefill_(std::move(prefill)),
        decode_(std::move(decode)),
        entity_token_(entity_token),
        entity_dim_(entity_dim) {}
  void on_decode_frame(control::Envelope envelope);

  std::shared_ptr<rpc::Connection> prefill_;
  std::shared_ptr<rpc::Connection> decode_;
  control::Hello decode_hello_;
  int32_t entity_token_;
  int entity_dim_;
  std::shared_ptr<std::unordered_map<uint64_t, Stream>> streams_ =
      std::make_shared<std::unordered_map<uint64_t, Stream>>();
};

}  // namespace recgpt::node
