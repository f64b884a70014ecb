// One agent call as the caller (the router, tests, benchmarks) describes it, and the control frames that carry
// it to a (prefill, decode) pair: ReserveKv to the decode node, PrefillRequest to the prefill node,
// StartDecode and Cancel to the decode node.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/sampler.h"
#include "proto/control.pb.h"

namespace recgpt::node {

// A decoding constraint (proto Constraint), ended by the call's first stop token: up to max_items of `allowed`
// (or of the nodes' `catalogue`), one per line; or with `lines`, up to max_items lines of `line_prefix` and free
// text; or with `json`, one JSON value under `json_schema` (empty: any object). None when nothing is set.
struct CallConstraint {
  std::vector<std::string> allowed;
  std::string catalogue;
  bool lines = false;
  std::string line_prefix;
  int32_t max_items = 1;
  int32_t max_line_tokens = 32;
  bool json = false;
  std::string json_schema = {};

  bool any() const { return !allowed.empty() || !catalogue.empty() || lines || json; }
};

struct AgentCall {
  std::vector<int32_t> prompt;
  std::vector<float> entity_vectors;    // [entity tokens of prompt, entity_dim], in prompt order
  std::vector<std::string> entity_ids;  // instead of vectors: ids the prefill node looks up in its entity store
  int32_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;
  CallConstraint constraint;
  uint64_t reservation_deadline_unix_ms = 0;  // 0: the decode node's default
  uint64_t prefill_deadline_unix_ms = 0;      // 0: the prefill node's default
};

// The model's entity token and adaptor input size: the frames carry entity keys and vectors per entity token.
struct EntityShape {
  int32_t entity_token = -1;
  int entity_dim = 0;
};

// kInvalidArgument when the prompt's entity tokens and the call's ids or vectors do not match in number.
Status check_entities(const AgentCall& call, const EntityShape& shape);

// The entity key of each entity token (engine/block_hash.h), in prompt order. Preconditions: check_entities.
std::vector<uint64_t> entity_keys(const AgentCall& call, const EntityShape& shape);

control::Envelope make_reserve(const AgentCall& call, const EntityShape& shape);
// The router's `attempt`-th prefill of the reservation (1, 2, ...).
control::Envelope make_prefill_request(const AgentCall& call, const EntityShape& shape,
                                       const control::Reservation& reservation, const control::Hello& decode_hello,
                                       uint32_t attempt);
// Decoding from the KV of prefill attempt `attempt`, after `attempts` attempts were sent into the reservation.
control::Envelope make_start(const AgentCall& call, uint64_t reservation_id, uint32_t first_token, uint32_t attempt,
                             uint32_t attempts);
// StartDecode with prefill_locally: the decode node computes the prompt itself (no prefill node can), after
// `attempts` prefill attempts failed.
control::Envelope make_local_start(const AgentCall& call, const EntityShape& shape, uint64_t reservation_id,
                                   uint32_t attempts);
// Tells the decode node holding reservation `reservation` that prefill attempt `attempt` goes to the prefill
// node greeted with `prefill_hello`.
control::Envelope make_prefill_attempt(uint64_t reservation, uint32_t attempt, const control::Hello& prefill_hello);
// `prefill_attempts`: when cancelling a reservation, the prefill attempts sent into it.
control::Envelope make_cancel(uint64_t request_id, const std::string& reason, uint32_t prefill_attempts = 0);

}  // namespace recgpt::node
