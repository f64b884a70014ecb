#include "router/call_runner.h"

#include <algorithm>

#include "common/log.h"
#include "common/rpc/listener.h"
#include "engine/block_hash.h"
#include "node/node_protocol.h"

namespace recgpt::router {
namespace {

namespace asio = boost::asio;

// A node's Error frame as a Status. A prefill node that cannot resolve an entity id (not in its store, or no
// store) fails the call, not the node.
Status status_of(const control::Error& error) {
  Status status = rpc::status_of(error);
  if (status.code() == StatusCode::kUnimplemented) return not_found(status.message());
  if (status.code() == StatusCode::kInternal || status.code() == StatusCode::kDataLoss ||
      status.code() == StatusCode::kIoError)
    return unavailable(status.message());
  return status;
}

// Counts a call on a node while it lives.
class InFlight {
 public:
  InFlight(Cluster& cluster, Tier tier, int index, std::span<const uint64_t> hashes, int64_t tokens)
      : cluster_(cluster), tier_(tier), index_(index), hashes_(hashes), tokens_(tokens) {
    cluster_.call_started(tier, index, hashes, tokens);
  }
  ~InFlight() { cluster_.call_ended(tier_, index_, hashes_, tokens_); }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  Cluster& cluster_;
  Tier tier_;
  int index_;
  std::span<const uint64_t> hashes_;  // the call's plan, which outlives this
  int64_t tokens_;
};

struct Reserved {
  int decode = -1;
  std::shared_ptr<node::NodeLink> link;
  uint64_t request_id = 0;  // the ReserveKv call's id: Cancel names it
  control::Reservation reservation;
};

// Reserves on the ranked decode nodes in turn until one has room.
asio::awaitable<Result<Reserved>> reserve(Cluster& cluster, const std::vector<int>& ranked, const CallPlan& plan) {
  Status last = unavailable("no decode node is healthy");
  bool any_full = false;
  for (int index : ranked) {
    std::shared_ptr<node::NodeLink> link = cluster.node(Tier::kDecode, index).link;
    if (link == nullptr) continue;
    auto reply = co_await link->call(node::make_reserve(plan.call, plan.entities), plan.deadline);
    if (!reply.is_ok()) {
      last = reply.status();
      continue;
    }
    if (reply->has_error()) {
      last = status_of(reply->error());
      if (is_call_error(last)) co_return last;
      continue;
    }
    if (reply->reserve_kv_reply().has_no_room()) {
      any_full = true;
      continue;
    }
    co_return Reserved{index, link, reply->request_id(), reply->reserve_kv_reply().reservation()};
  }
  if (any_full) co_return resource_exhausted("no decode node has room for the call now; retry later");
  co_return last;
}

}  // namespace

void complete_plan(CallPlan& plan, const node::EntityShape& entities, int block_size, rpc::Deadline deadline) {
  plan.deadline = deadline;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  const auto deadline_unix_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                          (std::chrono::system_clock::now() + left).time_since_epoch())
                                                          .count());
  plan.call.reservation_deadline_unix_ms = deadline_unix_ms;
  plan.call.prefill_deadline_unix_ms = deadline_unix_ms;
  plan.entities = entities;
  plan.block_size = block_size;
  std::vector<uint64_t> keys(plan.call.prompt.size(), 0);
  const std::vector<uint64_t> entity_keys = node::entity_keys(plan.call, entities);
  for (size_t i = 0, e = 0; i < keys.size(); ++i) {
    if (plan.call.prompt[i] == entities.entity_token && e < entity_keys.size()) keys[i] = entity_keys[e++];
  }
  plan.block_hashes = compute_block_hashes(plan.call.prompt, keys, block_size);
}

bool is_call_error(const Status& status) {
  return status.code() == StatusCode::kInvalidArgument || status.code() == StatusCode::kNotFound;
}

bool can_continue(const CallPlan& plan, std::span<const int32_t> generated) {
  return generated.size() < static_cast<size_t>(plan.call.max_new_tokens) &&
         std::find(generated.begin(), generated.end(), plan.entities.entity_token) == generated.end();
}

CallPlan continued_plan(const CallPlan& plan, std::span<const int32_t> generated) {
  CallPlan next = plan;
  next.call.prompt.insert(next.call.prompt.end(), generated.begin(), generated.end());
  next.call.max_new_tokens -= static_cast<int32_t>(generated.size());
  next.call.sampling.first_draw += generated.size();
  complete_plan(next, plan.entities, plan.block_size, plan.deadline);
  return next;
}

namespace {

// The logprobs a node sent with `tokens` tokens: one each when the call asked for them (none otherwise, whatever
// came). kUnavailable for a node's malformed answer (a count or token that does not fit), like a node failure.
template <typename Sent>  // a range of control::TokenLogprobs
Result<std::vector<TokenLogprobs>> call_logprobs(const CallPlan& plan, size_t tokens, const Sent& sent) {
  std::vector<TokenLogprobs> logprobs;
  if (!plan.call.sampling.logprobs) return logprobs;
  if (static_cast<size_t>(sent.size()) != tokens) {
    return unavailable("a node sent logprobs for " + std::to_string(sent.size()) + " of " + std::to_string(tokens) +
                       " tokens");
  }
  for (const control::TokenLogprobs& each : sent) {
    Result<TokenLogprobs> parsed = node::logprobs_from_proto(each, plan.vocab_size);
    if (!parsed.is_ok()) return unavailable("a node sent malformed logprobs: " + parsed.status().message());
    if (parsed->top.size() != static_cast<size_t>(plan.call.sampling.top_logprobs)) {
      return unavailable("a node sent " + std::to_string(parsed->top.size()) + " top logprobs, not " +
                         std::to_string(plan.call.sampling.top_logprobs));
    }
    logprobs.push_back(std::move(*parsed));
  }
  return logprobs;
}

}  // namespace

asio::awaitable<Result<CallOutcome>> run_call(Cluster& cluster, const PolicyOptions& policy, uint64_t counter,
                                              const CallPlan& plan, const TokenSink& sink, CallCancel& cancel) {
  const CallShape shape{plan.block_hashes,        static_cast<int64_t>(plan.call.prompt.size()),
                        plan.call.max_new_tokens, plan.block_size,
                        plan.preferred_prefill,   plan.preferred_decode};
  const Ranking ranking = rank_nodes(policy, cluster.snapshot(), shape, counter);
  if (ranking.decode.empty()) co_return unavailable("no decode node is healthy");

  auto reserved = co_await reserve(cluster, ranking.decode, plan);
  if (!reserved.is_ok()) co_return reserved.status();
  InFlight on_decode(cluster, Tier::kDecode, reserved->decode, plan.block_hashes, 0);
  std::shared_ptr<node::NodeLink> decode = reserved->link;
  CallOutcome outcome;
  outcome.decode_node = cluster.node(Tier::kDecode, reserved->decode).name();
  outcome.decode_index = reserved->decode;
  // Prefill attempts sent into the reservation: each names its KV stream, and the decode node keeps the blocks
  // out of reuse until the attempts it did not decode from have ended (control.proto, StartDecode).
  uint32_t attempts = 0;
  const auto release_reservation = [&] {
    (void)decode->send(node::make_cancel(reserved->request_id, "the call ended before decoding", attempts));
  };
  cancel.set_on_cancel(release_reservation);

  // Prefill on the best prefill node; a failure of the node (not of the call) is retried once on the next.
  Result<control::Envelope> prefilled = unavailable("no prefill node is healthy");
  for (int index : ranking.prefill) {
    if (attempts == 2 || cancel.cancelled() || !decode->is_open()) break;
    std::shared_ptr<node::NodeLink> link = cluster.node(Tier::kPrefill, index).link;
    if (link == nullptr) continue;
    // A prefill node whose KV layout the decode node cannot take (dtype, block size, shape: a misconfigured pool)
    // is passed over; with none left the decode node prefills the call itself. The cluster logged the mismatch
    // when the nodes connected; /readyz and /v1/cluster show it.
    if (!kv_layouts_fit(*link, *decode).is_ok()) continue;
    ++attempts;
    outcome.prefill_node = cluster.node(Tier::kPrefill, index).name();
    outcome.prefill_index = index;
    InFlight on_prefill(cluster, Tier::kPrefill, index, plan.block_hashes,
                        static_cast<int64_t>(plan.call.prompt.size()) - reserved->reservation.cached_tokens());
    // The attempt ends at once, here and on the prefill node (which drops the request and ends its KV stream),
    // when the call is cancelled or the decode node holding its blocks goes away.
    const uint64_t prefill_call = link->new_request_id();
    const auto stop_attempt = [link, prefill_call](const Status& why) {
      (void)link->send(node::make_cancel(prefill_call, why.message()));
      link->abandon_call(prefill_call, why);
    };
    cancel.set_on_cancel([&] {
      release_reservation();
      stop_attempt(failed_precondition("the call was cancelled"));
    });
    const uint64_t decode_watch =
        decode->watch_close([&] { stop_attempt(unavailable("the decode node holding the call's blocks went away")); });
    // First the decode node learns which engine writes this attempt, so that it can tell when that one is gone.
    (void)decode->send(node::make_prefill_attempt(reserved->reservation.reservation_id(), attempts, link->hello()));
    prefilled = co_await link->call(
        prefill_call,
        node::make_prefill_request(plan.call, plan.entities, reserved->reservation, decode->hello(), attempts),
        plan.deadline);
    decode->unwatch_close(decode_watch);
    if (!cancel.cancelled()) cancel.set_on_cancel(release_reservation);
    // The prefill node stops at the same deadline by its own clock; a Cancel covers a clock behind the router's.
    if (!prefilled.is_ok() && prefilled.status().code() == StatusCode::kDeadlineExceeded)
      (void)link->send(node::make_cancel(prefill_call, "deadline"));
    if (prefilled.is_ok() && prefilled->has_error()) prefilled = status_of(prefilled->error());
    if (prefilled.is_ok() || is_call_error(prefilled.status()) || cancel.cancelled() || !decode->is_open()) break;
    if (std::chrono::steady_clock::now() >= plan.deadline) break;
    log_event(LogLevel::kWarning, "router", "prefill failed, retrying on another node",
              {{"prefill", outcome.prefill_node}, {"error", prefilled.status().to_string()}});
  }
  if (cancel.cancelled()) {
    release_reservation();
    outcome.finish_reason = "cancelled";
    co_return outcome;
  }
  // No prefill node could take the call (none healthy, or they failed): the decode node prefills it locally.
  const bool prefill_locally = !prefilled.is_ok();
  if (prefill_locally) {
    if (is_call_error(prefilled.status()) || std::chrono::steady_clock::now() >= plan.deadline) {
      release_reservation();
      co_return prefilled.status();
    }
    if (attempts > 0) {
      log_event(LogLevel::kWarning, "router", "no prefill node took the call, prefilling on the decode node",
                {{"decode", outcome.decode_node}, {"error", prefilled.status().to_string()}});
    }
    outcome.prefill_node = outcome.decode_node;
    outcome.prefill_index = -1;
  }

  const uint64_t reservation_id = reserved->reservation.reservation_id();
  auto stream = decode->start_stream(
      prefill_locally ? node::make_local_start(plan.call, plan.entities, reservation_id, attempts)
                      : node::make_start(plan.call, reservation_id, prefilled->prefill_done().first_token(), attempts,
                                         attempts));  // the last attempt is the one that succeeded
  if (!stream.is_ok()) co_return stream.status();
  const uint64_t stream_id = *stream;
  bool stopped_by_sink = false;
  cancel.set_on_cancel([decode, stream_id] { (void)decode->send(node::make_cancel(stream_id, "cancelled")); });
  if (!prefill_locally) {
    const control::PrefillDone& done = prefilled->prefill_done();
    outcome.cached_tokens = done.tokens_cached();
    outcome.completion_tokens = 1;
    // The first token came from the prefill node; the decode node's chunks repeat none of it.
    std::vector<int32_t> first = {static_cast<int32_t>(done.first_token())};  // named: GCC 12 and temporaries
    auto first_logprobs =
        call_logprobs(plan, first.size(), std::span<const control::TokenLogprobs>(&done.first_token_logprobs(), 1));
    if (!first_logprobs.is_ok()) {
      decode->end_stream(stream_id);
      (void)decode->send(node::make_cancel(stream_id, "the prefill node's answer was malformed"));
      co_return first_logprobs.status();
    }
    if (!co_await sink(std::move(first), std::move(*first_logprobs))) {
      stopped_by_sink = true;
      (void)decode->send(node::make_cancel(stream_id, "a stop string matched"));
    }
  } else {
    outcome.cached_tokens = reserved->reservation.cached_tokens();
  }
  for (;;) {
    auto chunk = co_await decode->next_chunk(stream_id, plan.deadline);
    if (!chunk.is_ok()) {
      decode->end_stream(stream_id);
      if (chunk.status().code() == StatusCode::kDeadlineExceeded)
        (void)decode->send(node::make_cancel(stream_id, "deadline"));
      release_reservation();  // a start the node refused leaves the reservation held; cancel is idempotent
      co_return chunk.status();
    }
    std::vector<int32_t> tokens(chunk->token_ids().begin(), chunk->token_ids().end());
    auto logprobs = call_logprobs(plan, tokens.size(), chunk->logprobs());
    if (!logprobs.is_ok()) {
      decode->end_stream(stream_id);
      (void)decode->send(node::make_cancel(stream_id, "its token chunk was malformed"));
      co_return logprobs.status();
    }
    if (!stopped_by_sink && !cancel.cancelled() && !tokens.empty()) {
      outcome.completion_tokens += static_cast<int64_t>(tokens.size());
      if (!co_await sink(std::move(tokens), std::move(*logprobs))) {
        stopped_by_sink = true;
        (void)decode->send(node::make_cancel(stream_id, "a stop string matched"));
      }
    }
    if (chunk->finished()) {
      outcome.finish_reason = stopped_by_sink ? "stop" : cancel.cancelled() ? "cancelled" : chunk->finish_reason();
      break;
    }
  }
  co_return outcome;
}

}  // namespace recgpt::router
