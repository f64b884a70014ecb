#include "node/agent_call.h"

#include "engine/block_hash.h"

namespace recgpt::node {
namespace {

control::SamplingParams sampling_to_proto(const AgentCall& call) {
  control::SamplingParams proto;
  proto.set_temperature(call.sampling.temperature);
  proto.set_top_k(static_cast<uint32_t>(call.sampling.top_k));
  proto.set_top_p(call.sampling.top_p);
  proto.set_repetition_penalty(call.sampling.repetition_penalty);
  proto.set_seed(call.sampling.seed);
  proto.set_first_draw(call.sampling.first_draw);
  proto.set_frequency_penalty(call.sampling.frequency_penalty);
  proto.set_presence_penalty(call.sampling.presence_penalty);
  proto.set_logprobs(call.sampling.logprobs);
  proto.set_top_logprobs(static_cast<uint32_t>(call.sampling.top_logprobs));
  proto.set_min_tokens(static_cast<uint32_t>(call.sampling.min_tokens));
  for (auto [token, bias] : call.sampling.logit_bias) {
    proto.add_logit_bias_tokens(static_cast<uint32_t>(token));
    proto.add_logit_bias_values(bias);
  }
  proto.set_max_tokens(static_cast<uint32_t>(call.max_new_tokens));
  for (int32_t token : call.stop_tokens) proto.add_stop_token_ids(static_cast<uint32_t>(token));
  if (call.constraint.any()) {
    const CallConstraint& given = call.constraint;
    control::Constraint& constraint = *proto.mutable_constraint();
    for (const std::string& choice : given.allowed) constraint.add_choices(choice);
    constraint.set_catalogue(given.catalogue);
    constraint.set_max_items(static_cast<uint32_t>(given.max_items));
    constraint.set_lines(given.lines);
    constraint.set_line_prefix(given.line_prefix);
    constraint.set_max_line_tokens(static_cast<uint32_t>(given.max_line_tokens));
    constraint.set_json(given.json);
    constraint.set_json_schema(given.json_schema);
  }
  return proto;
}

// The prompt's entities, one EntityInput per entity token in order (ids, or vectors).
void add_entity_inputs(const AgentCall& call, const EntityShape& shape,
                       google::protobuf::RepeatedPtrField<control::EntityInput>& inputs) {
  const auto dim = static_cast<size_t>(shape.entity_dim);
  size_t entity = 0;
  for (size_t position = 0; position < call.prompt.size(); ++position) {
    if (call.prompt[position] != shape.entity_token) continue;
    control::EntityInput& input = *inputs.Add();
    input.set_position(static_cast<uint32_t>(position));
    if (!call.entity_ids.empty()) {
      if (entity < call.entity_ids.size()) input.set_entity_id(call.entity_ids[entity]);
      ++entity;
      continue;
    }
    const size_t begin = entity++ * dim;
    for (size_t i = 0; i < dim && begin + i < call.entity_vectors.size(); ++i)
      input.mutable_vector()->add_values(call.entity_vectors[begin + i]);
  }
}

}  // namespace

Status check_entities(const AgentCall& call, const EntityShape& shape) {
  size_t count = 0;
  for (int32_t token : call.prompt) count += token == shape.entity_token ? 1 : 0;
  if (!call.entity_ids.empty() && !call.entity_vectors.empty()) {
    return invalid_argument("entities are given either all by id or all as vectors");
  }
  const size_t given = !call.entity_ids.empty() ? call.entity_ids.size()
                       : shape.entity_dim > 0   ? call.entity_vectors.size() / static_cast<size_t>(shape.entity_dim)
                                                : 0;
  if (shape.entity_dim > 0 && call.entity_vectors.size() % static_cast<size_t>(shape.entity_dim) != 0) {
    return invalid_argument("entity vectors must have " + std::to_string(shape.entity_dim) + " values each");
  }
  if (given != count) {
    return invalid_argument("the prompt has " + std::to_string(count) + " entity tokens but " + std::to_string(given) +
                            " entities were given");
  }
  return Status::ok();
}

std::vector<uint64_t> entity_keys(const AgentCall& call, const EntityShape& shape) {
  std::vector<uint64_t> keys;
  const auto dim = static_cast<size_t>(shape.entity_dim);
  for (int32_t token : call.prompt) {
    if (token != shape.entity_token) continue;
    const size_t entity = keys.size();
    keys.push_back(call.entity_ids.empty()
                       ? entity_key_from_vector(std::span(call.entity_vectors).subspan(entity * dim, dim))
                       : entity_key_from_id(call.entity_ids[entity]));
  }
  return keys;
}

control::Envelope make_reserve(const AgentCall& call, const EntityShape& shape) {
  control::Envelope envelope;
  control::ReserveKv& body = *envelope.mutable_reserve_kv();
  for (int32_t token : call.prompt) body.add_token_ids(static_cast<uint32_t>(token));
  for (uint64_t key : entity_keys(call, shape)) body.add_entity_keys(key);
  body.set_max_tokens(static_cast<uint32_t>(call.max_new_tokens));
  body.set_deadline_unix_ms(call.reservation_deadline_unix_ms);
  return envelope;
}

control::Envelope make_prefill_request(const AgentCall& call, const EntityShape& shape,
                                       const control::Reservation& reservation, const control::Hello& decode_hello,
                                       uint32_t attempt) {
  control::Envelope envelope;
  control::PrefillRequest& body = *envelope.mutable_prefill_request();
  body.set_attempt(attempt);
  for (int32_t token : call.prompt) body.add_token_ids(static_cast<uint32_t>(token));
  add_entity_inputs(call, shape, *body.mutable_entities());
  *body.mutable_sampling() = sampling_to_proto(call);
  body.set_decode_node_id(decode_hello.node_id());
  body.set_reservation_id(reservation.reservation_id());
  body.set_cached_tokens(reservation.cached_tokens());
  *body.mutable_destination_block_ids() = reservation.block_ids();
  body.set_deadline_unix_ms(call.prefill_deadline_unix_ms);
  body.set_decode_transfer_endpoint(decode_hello.transfer_endpoint());
  body.set_decode_kv_region_key(decode_hello.kv_region_key());
  *body.mutable_decode_kv_layout() = decode_hello.kv_layout();
  return envelope;
}

control::Envelope make_start(const AgentCall& call, uint64_t reservation_id, uint32_t first_token, uint32_t attempt,
                             uint32_t attempts) {
  control::Envelope envelope;
  control::StartDecode& body = *envelope.mutable_start_decode();
  body.set_reservation_id(reservation_id);
  body.set_first_token(first_token);
  *body.mutable_sampling() = sampling_to_proto(call);
  body.set_prefill_attempt(attempt);
  body.set_prefill_attempts(attempts);
  return envelope;
}

control::Envelope make_local_start(const AgentCall& call, const EntityShape& shape, uint64_t reservation_id,
                                   uint32_t attempts) {
  control::Envelope envelope = make_start(call, reservation_id, 0, 0, attempts);
  envelope.mutable_start_decode()->set_prefill_locally(true);
  add_entity_inputs(call, shape, *envelope.mutable_start_decode()->mutable_entities());
  return envelope;
}

control::Envelope make_prefill_attempt(uint64_t reservation, uint32_t attempt, const control::Hello& prefill_hello) {
  control::Envelope envelope;
  control::PrefillAttempt& sent = *envelope.mutable_prefill_attempt();
  sent.set_reservation_id(reservation);
  sent.set_attempt(attempt);
  sent.set_prefill_transfer_endpoint(prefill_hello.transfer_endpoint());
  return envelope;
}

control::Envelope make_cancel(uint64_t request_id, const std::string& reason, uint32_t prefill_attempts) {
  control::Envelope envelope;
  envelope.set_request_id(request_id);
  envelope.mutable_cancel()->set_reason(reason);
  envelope.mutable_cancel()->set_prefill_attempts(prefill_attempts);
  return envelope;
}

}  // namespace recgpt::node
